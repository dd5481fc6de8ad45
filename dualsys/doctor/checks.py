"""Static checks: what the kernel, the CPU and this user's rights allow a real-time loop.

Each check returns a dict with `status` ('ok' | 'warn' | 'bad' | 'info'), a one-line `text`
and the values it read. Nothing here changes the system (the FIFO test runs in a throw-away
thread) and nothing raises on a missing file: virtual machines and containers lack many.
"""

from __future__ import annotations

import gzip
import os
import platform
import resource
import shutil
import subprocess
import threading
from pathlib import Path

from dualsys.doctor import parse

SYS_CPU = Path("/sys/devices/system/cpu")
DMA_LATENCY = Path("/dev/cpu_dma_latency")
#: An idle state whose exit latency exceeds this (µs) can show up in every wake-up.
DEEP_IDLE_US = 10


def read(path: str | Path, default: str = "") -> str:
    """A file's text, or `default` when it is absent or unreadable."""
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return default


def _fifo_allowed(priority: int) -> str:
    """Try SCHED_FIFO on a throw-away thread; '' when granted, else the reason."""
    result: list[str] = []

    def attempt() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # this thread only
            result.append("")
        except OSError as exc:
            result.append(exc.strerror or str(exc))

    t = threading.Thread(target=attempt, name="doctor-fifo-test")
    t.start()
    t.join()
    return result[0] if result else "test thread failed"


def scheduler(priority: int = 80) -> dict:
    """SCHED_FIFO and memory-locking rights of this user."""
    caps = parse.parse_cap_eff(read("/proc/self/status"))
    rtprio = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
    memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    fifo_err = _fifo_allowed(priority)
    out = {
        "root": os.geteuid() == 0,
        "cap_sys_nice": bool(caps >> parse.CAP_SYS_NICE & 1),
        "cap_ipc_lock": bool(caps >> parse.CAP_IPC_LOCK & 1),
        "rlimit_rtprio": "unlimited" if rtprio == resource.RLIM_INFINITY else rtprio,
        "rlimit_memlock_kb": "unlimited" if memlock == resource.RLIM_INFINITY else memlock // 1024,
        "fifo": not fifo_err,
        "fifo_priority": priority,
        "fifo_error": fifo_err,
    }
    mlock_ok = out["cap_ipc_lock"] or memlock == resource.RLIM_INFINITY
    out["mlockall"] = mlock_ok
    if fifo_err:
        out["status"], out["text"] = "bad", f"SCHED_FIFO {priority} refused ({fifo_err})"
    elif not mlock_ok:
        out["status"] = "warn"
        kb = out["rlimit_memlock_kb"]
        out["text"] = f"SCHED_FIFO {priority} allowed; memlock limited to {kb} kB"
    else:
        out["status"], out["text"] = "ok", f"SCHED_FIFO {priority} and mlockall allowed"
    return out


def preemption() -> dict:
    """The kernel's preemption model (PREEMPT_RT is the real-time one)."""
    release = platform.release()
    config = read(f"/boot/config-{release}")
    if not config:
        try:
            with gzip.open("/proc/config.gz", "rt") as f:
                config = f.read()
        except OSError:
            config = ""
    uname_v = platform.version()
    model, source = parse.preempt_model(
        uname_v,
        read("/sys/kernel/realtime"),
        read("/sys/kernel/debug/sched/preempt"),
        config,
        read("/proc/cmdline"),
    )
    status = "ok" if model == "rt" else "info" if model == "full" else "warn"
    return {
        "model": model,
        "source": source,
        "uname_v": uname_v,
        "release": release,
        "status": status,
        "text": f"kernel preemption: {model}" + (f" ({source})" if source else ""),
    }


def isolation(cores: list[int]) -> dict:
    """isolcpus / nohz_full / rcu_nocbs and this process's cpuset, for the configured cores."""
    cmd = parse.parse_cmdline(read("/proc/cmdline"))
    isolated = parse.parse_cpu_list(read(SYS_CPU / "isolated"))
    nohz = parse.parse_cpu_list(cmd.get("nohz_full", ""))
    nocbs = parse.parse_cpu_list(cmd.get("rcu_nocbs", ""))
    allowed = sorted(os.sched_getaffinity(0))
    per_core = {
        c: {"isolated": c in isolated, "nohz_full": c in nohz, "rcu_nocbs": c in nocbs}
        for c in cores
    }
    missing = [c for c, v in per_core.items() if not v["isolated"]]
    out = {
        "cmdline": cmd,
        "isolated": isolated,
        "cores": per_core,
        "cpuset": read("/proc/self/cpuset").strip(),
        "allowed_cpus": allowed,
        "online_cpus": parse.parse_cpu_list(read(SYS_CPU / "online")) or allowed,
    }
    out["status"] = "warn" if missing else "ok"
    out["text"] = (
        f"core(s) {','.join(map(str, missing))} not isolated (shared with every other task)"
        if missing
        else "configured cores isolated"
    )
    return out


def smt(cores: list[int]) -> dict:
    """SMT (hyper-thread) siblings of the configured cores: a busy sibling slows the loop."""
    siblings = {}
    for c in cores:
        sib = parse.parse_cpu_list(read(SYS_CPU / f"cpu{c}/topology/thread_siblings_list"))
        siblings[c] = [s for s in sib if s != c]
    shared = {c: s for c, s in siblings.items() if s}
    return {
        "siblings": siblings,
        "smt_control": read(SYS_CPU / "smt/control").strip(),
        "status": "warn" if shared else "ok",
        "text": "; ".join(f"core {c} shares its core with {s}" for c, s in shared.items())
        or "no SMT siblings on the configured cores",
    }


def governor(cores: list[int]) -> dict:
    """cpufreq scaling governor per configured core (absent in most VMs)."""
    govs = {c: read(SYS_CPU / f"cpu{c}/cpufreq/scaling_governor").strip() for c in cores}
    known = {c: g for c, g in govs.items() if g}
    if not known:
        return {"governors": govs, "status": "info", "text": "no cpufreq (fixed clock or VM)"}
    slow = {c: g for c, g in known.items() if g != "performance"}
    return {
        "governors": govs,
        "status": "warn" if slow else "ok",
        "text": ", ".join(f"core {c}: {g}" for c, g in known.items()),
    }


def idle(cores: list[int]) -> dict:
    """cpuidle driver, idle states (name, exit latency µs) and /dev/cpu_dma_latency."""
    states: dict[int, list[dict]] = {}
    for c in cores:
        rows = []
        for d in sorted((SYS_CPU / f"cpu{c}/cpuidle").glob("state*")):
            lat = read(d / "latency").strip()
            rows.append(
                {
                    "name": read(d / "name").strip(),
                    "latency_us": int(lat) if lat.isdigit() else None,
                    "disabled": read(d / "disable").strip() == "1",
                }
            )
        states[c] = rows
    deepest = max(
        (s["latency_us"] or 0 for rows in states.values() for s in rows if not s["disabled"]),
        default=0,
    )
    dma = dma_latency()
    # any state beyond POLL halts the CPU (in a VM: hands the vCPU back to the host), which
    # cpu_dma_latency = 0 forbids; the cpuidle latency figure understates a VM's halt cost
    halts = any(s["name"] != "POLL" and not s["disabled"] for r in states.values() for s in r)
    out = {
        "driver": read(SYS_CPU / "cpuidle/current_driver").strip(),
        "states": states,
        "deepest_us": deepest,
        "halting_states": halts,
        "dma_latency": dma,
    }
    deep = deepest > DEEP_IDLE_US
    out["status"] = "warn" if (deep or halts) and not dma["can_hold"] else "info" if halts else "ok"
    names = sorted({s["name"] for rows in states.values() for s in rows})
    out["text"] = (
        f"idle driver {out['driver'] or 'none'}, states {','.join(names) or 'none'} "
        f"(deepest exit {deepest} µs); cpu_dma_latency "
        + ("can be held at 0" if dma["can_hold"] else f"cannot be held ({dma['error']})")
    )
    return out


def dma_latency() -> dict:
    """Current /dev/cpu_dma_latency value (µs) and whether this user may hold it at 0."""
    out: dict = {"present": DMA_LATENCY.exists(), "value_us": None, "can_hold": False, "error": ""}
    if not out["present"]:
        out["error"] = "no /dev/cpu_dma_latency"
        return out
    try:
        with open(DMA_LATENCY, "rb") as f:
            raw = f.read(4)
        out["value_us"] = int.from_bytes(raw, "little", signed=True) if len(raw) == 4 else None
    except OSError as exc:
        out["error"] = exc.strerror or str(exc)
    out["can_hold"] = os.access(DMA_LATENCY, os.W_OK)
    if not out["can_hold"] and not out["error"]:
        out["error"] = "not writable by this user"
    return out


def virtualisation() -> dict:
    """Hypervisor detection: a VM's host can stall a vCPU for milliseconds."""
    kind = ""
    if shutil.which("systemd-detect-virt"):
        try:
            r = subprocess.run(
                ["systemd-detect-virt"], capture_output=True, text=True, timeout=5, check=False
            )
            kind = r.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            kind = ""
    flag = " hypervisor" in read("/proc/cpuinfo")
    vendor = read("/sys/class/dmi/id/sys_vendor").strip()
    virtual = flag or (kind not in ("", "none"))
    return {
        "detect_virt": kind,
        "hypervisor_flag": flag,
        "sys_vendor": vendor,
        "virtual": virtual,
        "status": "warn" if virtual else "ok",
        "text": (
            "virtual machine"
            + (f" (hypervisor flag set; detect-virt: {kind or '?'}" if flag else f" ({kind}")
            + (f", vendor {vendor})" if vendor else ")")
        )
        if virtual
        else "bare metal",
    }


def rt_throttling() -> dict:
    """sched_rt_runtime_us / sched_rt_period_us: the share of each period FIFO tasks may use."""
    runtime = read("/proc/sys/kernel/sched_rt_runtime_us").strip()
    period = read("/proc/sys/kernel/sched_rt_period_us").strip()
    out: dict = {"runtime_us": runtime, "period_us": period}
    try:
        r, p = int(runtime), int(period)
    except ValueError:
        return {**out, "status": "info", "text": "RT throttling settings unreadable"}
    if r < 0:
        text = "RT throttling off (a runaway FIFO task can hang a core)"
        return {**out, "status": "info", "text": text}
    share = 100.0 * r / p
    return {
        **out,
        "status": "ok" if share >= 90 else "warn",
        "text": f"FIFO tasks may use {share:.0f}% of each {p / 1e6:g} s",
    }


def rt_tasks(priority: int = 80) -> dict:
    """Other user-space real-time threads at or above `priority`: they delay a FIFO loop at
    that priority on their core (kernel threads, which have no cmdline, are left out)."""
    found = []
    me = os.getpid()
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*/stat"):
        pid = int(task.parts[2])
        if pid == me or not read(f"/proc/{pid}/cmdline"):
            continue
        t = parse.parse_task_stat(read(task))
        if t and t["policy"] in ("SCHED_FIFO", "SCHED_RR") and t["rt_priority"] >= priority:
            found.append({"pid": pid, "tid": int(task.parts[4]), **t})
    return {
        "tasks": found,
        "status": "warn" if found else "ok",
        "text": "; ".join(
            f"{t['comm']} (pid {t['pid']}) {t['policy']} {t['rt_priority']} last on core {t['cpu']}"
            for t in found[:4]
        )
        + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        + (" compete with the probe" if found else "")
        or f"no other user real-time threads at priority >= {priority}",
    }


def run_all(cores: list[int], fifo_priority: int = 80) -> dict:
    """Every static check, keyed by name (cheap: well under a second)."""
    return {
        "scheduler": scheduler(fifo_priority),
        "preemption": preemption(),
        "isolation": isolation(cores),
        "smt": smt(cores),
        "governor": governor(cores),
        "idle": idle(cores),
        "virtualisation": virtualisation(),
        "rt_throttling": rt_throttling(),
        "rt_tasks": rt_tasks(fifo_priority),
    }
