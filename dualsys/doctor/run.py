"""`run_doctor`: the static checks, the probe on every configured core, verdicts and fixes."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Callable

from dualsys import config
from dualsys.doctor import checks as checks_mod
from dualsys.doctor import fixes, probe, verdict
from dualsys.doctor.load import StandardLoad, hold_dma_latency
from dualsys.doctor.parse import parse_proc_stat, steal_percent

#: Extra rates probed besides the config's control rate, so a user sees what they would get.
EXTRA_RATES = (500, 1000)
FIFO_PRIORITY = 80


def configured_cores(cfg) -> dict[int, list[str]]:
    """{core: [roles placed on it]} from cfg.cores (system1 is the control loop's core)."""
    out: dict[int, list[str]] = {}
    for role in ("system1", "system2", "robot"):
        out.setdefault(getattr(cfg.cores, role), []).append(role)
    return dict(sorted(out.items()))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_doctor(
    cfg,
    seconds: float = 12.0,
    *,
    load: bool = True,
    fifo: bool = True,
    hold_dma: bool = True,
    probe_kind: str | None = None,
    rates: list[int] | None = None,
    progress: Callable[[str], None] = _stderr,
) -> dict:
    """Check and measure this machine against `cfg` (a RobotConfig); the doctor's JSON dict.

    `seconds` is the probe length per condition at the control rate (all configured cores at
    once); the extra rates get a quarter of it (at least 0.5 s), so with the default 12 s the
    whole run takes about 2 x (12 + 3 + 3) s. The control rate gets the most ticks because the
    miss budget needs them: a 0.2% budget allows 5 misses in 2400 ticks.
    """
    t0 = time.monotonic()
    roles = configured_cores(cfg)
    n_cpu = os.cpu_count() or 1
    cores = [c for c in roles if c < n_cpu]
    notes = [f"core {c} ({', '.join(roles[c])}) does not exist here" for c in roles if c >= n_cpu]
    control = cfg.cores.system1
    checks = checks_mod.run_all(cores, FIFO_PRIORITY)
    for name, chk in checks.items():
        progress(f"  [{chk['status']:>4}] {name:<15} {chk['text']}")
    prio = FIFO_PRIORITY if fifo and checks["scheduler"]["fifo"] else 0
    if not fifo:
        notes.append("SCHED_FIFO not requested (--no-fifo): probes ran on normal scheduling")
    elif not prio:
        why = checks["scheduler"]["fifo_error"]
        notes.append(f"SCHED_FIFO unavailable ({why}): probes ran on normal scheduling")
    pr = probe.choose(probe_kind)
    if pr.note:
        notes.append(pr.note)
    rates = rates or list(dict.fromkeys([cfg.rates.control_hz, *EXTRA_RATES]))
    conditions = ["quiet", "loaded"] if load else ["quiet"]
    results: list[dict] = []
    steal_all: dict[int, float] = {}
    load_desc = StandardLoad(sorted(os.sched_getaffinity(0))).description
    with hold_dma_latency(hold_dma) as dma_why:
        dma_held = not dma_why
        held = "/dev/cpu_dma_latency held at 0" if dma_held else f"not held: {dma_why}"
        sched = f"SCHED_FIFO {prio}" if prio else "normal scheduling"
        progress(f"probing cores {','.join(map(str, cores))}: {pr.kind} probe, {sched}, {held}")
        for cond in conditions:
            gen = StandardLoad(sorted(os.sched_getaffinity(0))) if cond == "loaded" else None
            with gen or contextlib.nullcontext():
                for hz in rates:
                    secs = seconds if hz == cfg.rates.control_hz else max(0.5, seconds / 4)
                    progress(f"  {cond:<6} {hz:>5} Hz  {secs:g} s ...")
                    before = parse_proc_stat(checks_mod.read("/proc/stat"))
                    got = probe.run_parallel(pr, cores, hz, secs, prio)
                    steal = steal_percent(before, parse_proc_stat(checks_mod.read("/proc/stat")))
                    for c, r in got.items():
                        steal_all[c] = max(steal_all.get(c, 0.0), steal.get(c, 0.0))
                        r.update(condition=cond, roles=roles[c], seconds=secs)
                        r["steal_pct"] = steal.get(c, 0.0)
                        results.append(r)
                        progress("         " + _line(r))
    floors = [
        verdict.Floor.from_result(r["condition"], r)
        for r in results
        if r["core"] == control and "error" not in r
    ]
    budgets = {f.hz: config.budgets_at(cfg, f.hz) for f in floors}  # as --control-hz runs
    verdicts = verdict.judge(budgets, floors)
    at_control = [v for v in verdicts if v["hz"] == cfg.rates.control_hz]
    at_rate = [f for f in floors if f.hz == cfg.rates.control_hz]
    note = verdict.resolution_note(cfg.budgets.miss_rate, at_rate)
    if note:
        notes.append(note)
    errors = [r["error"] for r in results if "error" in r]
    return {
        "robot": cfg.name,
        "config": str(cfg.path),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
        "control_core": control,
        "control_hz": cfg.rates.control_hz,
        "cores": {str(c): roles[c] for c in cores},
        "checks": checks,
        "probe": {
            "kind": pr.kind,
            "fifo": bool(prio),
            "priority": prio,
            "dma_latency_held": dma_held,
            "dma_latency_note": dma_why,
            "seconds": seconds,
            "rates": rates,
            "conditions": conditions,
            "load": load_desc if load else "",
        },
        "results": results,
        "verdicts": verdicts,
        "verdict": verdict.worst([v["verdict"] for v in at_control]) if floors else verdict.UNKNOWN,
        "fixes": fixes.suggest(checks, control, floors, steal_all),
        "notes": notes,
        "errors": errors,
    }


def _line(r: dict) -> str:
    if "error" in r:
        return f"core {r['core']}: ERROR {r['error']}"
    return (
        f"core {r['core']}: p50 {r['p50_us']} p99 {r['p99_us']} p99.9 {r['p999_us']} "
        f"max {r['max_us']:g} µs, misses {r['misses']}/{r['ticks']}, streak {r['max_streak']}, "
        f"steal {r['steal_pct']:g}%"
    )
