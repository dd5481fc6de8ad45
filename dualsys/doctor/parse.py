"""Parsers for the /proc, /sys and tool texts the doctor reads (pure functions, unit-tested)."""

from __future__ import annotations

import re

#: Linux capability bits the real-time set-up needs.
CAP_IPC_LOCK, CAP_SYS_NICE = 14, 23
#: Kernel command-line parameters that matter for latency.
CMDLINE_KEYS = (
    "isolcpus",
    "nohz_full",
    "rcu_nocbs",
    "irqaffinity",
    "idle",
    "processor.max_cstate",
    "intel_idle.max_cstate",
    "preempt",
    "nosmt",
    "threadirqs",
)


def parse_cpu_list(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5]; flags mixed in (isolcpus=domain,managed_irq,1-3) are skipped."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?(?::\d+/\d+)?", part)
        if not m:
            continue
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        cpus.update(range(lo, hi + 1))
    return sorted(cpus)


def parse_cmdline(text: str) -> dict[str, str]:
    """The latency-relevant parameters of /proc/cmdline (kernel part, before a bare '--')."""
    out: dict[str, str] = {}
    for word in text.split():
        if word == "--":
            break
        key, _, value = word.partition("=")
        if key in CMDLINE_KEYS:
            out[key] = value
    return out


def parse_debug_preempt(text: str) -> str:
    """/sys/kernel/debug/sched/preempt ('none voluntary (full) lazy') -> 'full'."""
    m = re.search(r"\((\w+)\)", text)
    return m.group(1) if m else ""


def parse_kernel_config(text: str) -> str:
    """A kernel .config -> 'rt', 'full', 'voluntary', 'none' (+ '/dynamic'), or ''."""
    on = {m.group(1) for m in re.finditer(r"^CONFIG_(PREEMPT\w*)=y", text, re.M)}
    if "PREEMPT_RT" in on:
        return "rt"
    base = (
        "full"
        if "PREEMPT" in on
        else "voluntary"
        if "PREEMPT_VOLUNTARY" in on
        else "none"
        if "PREEMPT_NONE" in on
        else ""
    )
    return f"{base}/dynamic" if base and "PREEMPT_DYNAMIC" in on else base


def preempt_model(
    uname_v: str, realtime: str = "", debug_preempt: str = "", config: str = "", cmdline: str = ""
) -> tuple[str, str]:
    """The kernel's preemption model and where it was read: ('rt'|'full'|'voluntary'|'none'|
    'dynamic (mode unknown)'|'unknown', source)."""
    if realtime.strip() == "1" or "PREEMPT_RT" in uname_v:
        return "rt", "/sys/kernel/realtime" if realtime.strip() == "1" else "uname -v"
    mode = parse_debug_preempt(debug_preempt)
    if mode:
        return mode, "/sys/kernel/debug/sched/preempt"
    boot = parse_kernel_config(config) if config else ""
    dynamic = "PREEMPT_DYNAMIC" in uname_v or boot.endswith("/dynamic")
    if dynamic:
        chosen = parse_cmdline(cmdline).get("preempt", "")
        if chosen:
            return chosen, "preempt= on the kernel command line"
        if boot:
            return boot.split("/")[0], "kernel config (dynamic: boot default)"
        return "dynamic (mode unknown)", "uname -v"
    if boot:
        return boot, "kernel config"
    if re.search(r"\bPREEMPT\b", uname_v):
        return "full", "uname -v"
    return "unknown", ""


def parse_proc_stat(text: str) -> dict[int, tuple[int, int]]:
    """/proc/stat -> {cpu: (total jiffies, steal jiffies)} for the per-CPU lines."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        m = re.match(r"cpu(\d+)\s+(.*)", line)
        if not m:
            continue
        vals = [int(v) for v in m.group(2).split()]
        # user nice system idle iowait irq softirq steal guest guest_nice; guests are in user
        total = sum(vals[:8])
        steal = vals[7] if len(vals) > 7 else 0
        out[int(m.group(1))] = (total, steal)
    return out


def steal_percent(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict:
    """Steal time per CPU between two /proc/stat readings, in % of that CPU's time."""
    out = {}
    for cpu, (t1, s1) in after.items():
        t0, s0 = before.get(cpu, (t1, s1))
        out[cpu] = round(100.0 * (s1 - s0) / (t1 - t0), 2) if t1 > t0 else 0.0
    return out


def parse_cap_eff(status_text: str) -> int:
    """The effective capability mask from /proc/self/status (0 when absent)."""
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status_text, re.M)
    return int(m.group(1), 16) if m else 0


def parse_cyclictest(text: str, hz: int) -> dict:
    """cyclictest -q -h MAX output (one thread) -> the probe's result fields.

    Histogram lines are 'bucket_us count'; misses (late by more than a period) come from the
    histogram, so the longest streak is unknown (None).
    """
    period_us = 1_000_000 / hz
    buckets: list[tuple[int, int]] = []
    max_us = overflow = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\d+)\s+(\d+)\s*$", line)
        if m:
            buckets.append((int(m.group(1)), int(m.group(2))))
        elif m := re.match(r"#\s*Max Latencies:\s*(\d+)", line):
            max_us = float(m.group(1))
        elif m := re.match(r"#\s*Histogram Overflows:\s*(\d+)", line):
            overflow = int(m.group(1))
    buckets.sort()
    ticks = sum(c for _, c in buckets) + int(overflow)
    if not ticks:
        raise ValueError("cyclictest output has no histogram")

    def pct(p: float) -> int:
        want, seen = max(1, int(ticks * p / 100 + 0.999999)), 0
        for b, c in buckets:
            seen += c
            if seen >= want:
                return b
        return int(max_us)

    misses = sum(c for b, c in buckets if b > period_us) + int(overflow)
    late_half = sum(c for b, c in buckets if b > period_us / 2) + int(overflow)
    mean = sum(b * c for b, c in buckets) / max(1, ticks - overflow)
    return {
        "probe": "cyclictest",
        "hz": hz,
        "ticks": ticks,
        "p50_us": pct(50),
        "p99_us": pct(99),
        "p999_us": pct(99.9),
        "max_us": max_us,
        "mean_us": round(mean, 1),
        "misses": misses,
        "late_half": late_half,
        "max_streak": None,
    }


#: Scheduling policies as /proc/PID/stat numbers them.
POLICIES = {0: "SCHED_OTHER", 1: "SCHED_FIFO", 2: "SCHED_RR", 3: "SCHED_BATCH", 5: "SCHED_IDLE",
            6: "SCHED_DEADLINE"}  # fmt: skip


def parse_task_stat(text: str) -> dict | None:
    """/proc/PID/task/TID/stat -> {comm, cpu, rt_priority, policy}; None when malformed."""
    head, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 39:
        return None
    policy = int(fields[38])
    return {
        "comm": head.partition("(")[2],
        "cpu": int(fields[36]),  # the CPU it last ran on (field 39)
        "rt_priority": int(fields[37]),
        "policy": POLICIES.get(policy, str(policy)),
    }
