"""Concrete fixes for what the checks and the probe found (kernel parameters, limits, settings)."""

from __future__ import annotations

import getpass

from dualsys.doctor.checks import DEEP_IDLE_US
from dualsys.doctor.verdict import Floor

_BOOT = "(kernel parameters: add to GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot)"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "USER"


def suggest(
    checks: dict, control_core: int, floors: list[Floor], steal: dict | None = None
) -> list[str]:
    """The fixes that apply, most important first, as lines a user can act on."""
    out: list[str] = []
    c = control_core
    s = checks["scheduler"]
    if not s["fifo"]:
        if s["root"]:
            out.append(
                "SCHED_FIFO is refused even as root: in a container add the capability "
                "(docker run --cap-add SYS_NICE --ulimit rtprio=99 --ulimit memlock=-1) or give "
                "its cgroup a real-time budget (cpu.rt_runtime_us)"
            )
        else:
            u = _user()
            out.append(
                f"allow real-time scheduling for {u}: add to /etc/security/limits.conf "
                f"'{u} - rtprio 95' and '{u} - memlock unlimited', then log in again "
                "(or run as root / grant CAP_SYS_NICE and CAP_IPC_LOCK)"
            )
    elif not s["mlockall"]:
        line = f"'{_user()} - memlock unlimited' in /etc/security/limits.conf"
        out.append("allow locking memory: " + line)
    p = checks["preemption"]
    if p["model"] != "rt":
        line = (
            "boot a PREEMPT_RT kernel (Ubuntu 24.04: linux-realtime through Ubuntu Pro; Debian: "
            "linux-image-rt-amd64; or build with CONFIG_PREEMPT_RT=y)"
        )
        if p["model"] not in ("full",) and "dynamic" in (p["model"] + p["uname_v"].lower()):
            line += "; meanwhile boot with preempt=full " + _BOOT
        out.append(line)
    iso = checks["isolation"]
    sib = checks["smt"]["siblings"].get(c, [])
    if not iso["cores"].get(c, {}).get("isolated"):
        others = [x for x in iso["online_cpus"] if x != c and x not in sib]
        cpus = ",".join(map(str, [c, *sib]))
        irq = f" irqaffinity={','.join(map(str, others))}" if others else ""
        out.append(
            f"isolate the control core {c}: isolcpus={cpus} nohz_full={cpus} rcu_nocbs={cpus}"
            f"{irq} {_BOOT}"
        )
    if sib:
        out.append(
            f"core {c} has SMT sibling(s) {sib}: isolate them with it or switch SMT off "
            "(nosmt, or echo off > /sys/devices/system/cpu/smt/control)"
        )
    if checks["governor"]["status"] == "warn":
        out.append(
            "set the frequency governor to performance: cpupower frequency-set -g performance "
            "(or echo performance > /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)"
        )
    idle = checks["idle"]
    dma = idle["dma_latency"]
    if idle["halting_states"] or _better_loaded(floors):
        line = (
            "keep /dev/cpu_dma_latency at 0 while the robot runs (dualsys's control loop holds "
            "it when permitted; the doctor held it during the probe when it could)"
        )
        if not dma["can_hold"]:
            line += (
                '; let the robot user write it with a udev rule: KERNEL=="cpu_dma_latency", '
                'GROUP="realtime", MODE="0660"'
            )
        out.append(line)
        if idle["deepest_us"] > DEEP_IDLE_US:
            out.append(
                "or forbid deep idle states: processor.max_cstate=1 intel_idle.max_cstate=0 "
                "(or idle=poll, which burns a core's power) " + _BOOT
            )
    v = checks["virtualisation"]
    if v["virtual"]:
        worst_ms = max((f.p999_us for f in floors), default=0) / 1000
        out.append(
            "this is a virtual machine: the host can stall a vCPU for milliseconds"
            + (f" (worst p99.9 measured {worst_ms:.1f} ms)" if worst_ms else "")
            + "; ask for dedicated, pinned vCPUs (host-side isolation) or run the control loop "
            "on bare metal"
        )
    high = {k: x for k, x in (steal or {}).items() if x > 1.0}
    if high:
        out.append(
            "steal time "
            + ", ".join(f"core {k} {x:.1f}%" for k, x in high.items())
            + ": the host overcommits this VM's CPUs"
        )
    if checks.get("rt_tasks", {}).get("tasks"):
        out.append(
            "other real-time threads ran at the probe's priority or above (rt_tasks): stop them "
            "or run the doctor again when the machine is as it will be on the robot"
        )
    if checks["rt_throttling"]["status"] == "warn":
        out.append("raise kernel.sched_rt_runtime_us to 950000 (sysctl): FIFO time is throttled")
    return out


def _better_loaded(floors: list[Floor]) -> bool:
    """True when some rate's floor is clearly better under load than quiet (idle wake-up cost)."""
    by = {(f.condition, f.hz): f for f in floors}
    for (cond, hz), q in by.items():
        ld = by.get(("loaded", hz))
        if cond == "quiet" and ld and q.p99_us > 1.5 * ld.p99_us and q.p99_us > 50:
            return True
    return False
