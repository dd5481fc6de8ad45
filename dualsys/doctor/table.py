"""The doctor's readable report: checks, the probe table, verdicts per budget and fixes."""

from __future__ import annotations

_MARK = {"ok": "ok", "info": "--", "warn": "!!", "bad": "XX"}


def render(result: dict) -> str:
    """The whole report as text (what `dualsys doctor` prints at the end)."""
    p = result["probe"]
    lines = [
        f"dualsys doctor: {result['robot']} ({result['config']}), control loop "
        f"{result['control_hz']} Hz on core {result['control_core']}",
        "",
        "machine:",
    ]
    for name, chk in result["checks"].items():
        lines.append(f"  {_MARK.get(chk['status'], '  ')} {name:<15} {chk['text']}")
    lines += [
        "",
        f"wake-up latency floor ({p['kind']} probe, "
        + (f"SCHED_FIFO {p['priority']}" if p["fifo"] else "normal scheduling, FIFO unavailable")
        + (", cpu_dma_latency held at 0" if p["dma_latency_held"] else ", cpu_dma_latency not held")
        + f", {p['seconds']:g} s per row; lateness in µs):",
        f"  {'condition':<9} {'core':>4} {'roles':<16} {'Hz':>5} {'p50':>6} {'p99':>6} "
        f"{'p99.9':>7} {'max':>8} {'misses':>8} {'streak':>6} {'steal':>6}",
    ]
    for r in result["results"]:
        head = f"  {r['condition']:<9} {r['core']:>4} {','.join(r['roles']):<16} {r['hz']:>5}"
        if "error" in r:
            lines.append(f"{head} ERROR {r['error']}")
            continue
        rate = 100 * r["misses"] / r["ticks"] if r["ticks"] else 0.0
        streak = "?" if r["max_streak"] is None else r["max_streak"]
        lines.append(
            f"{head} {r['p50_us']:>6g} {r['p99_us']:>6g} {r['p999_us']:>7g} {r['max_us']:>8.0f} "
            f"{rate:>7.2f}% {streak:>6} {r['steal_pct']:>5.1f}%"
        )
    if p.get("load"):
        lines.append(f"  loaded = {p['load']}")
    lines += ["", f"verdict per budget (control core {result['control_core']}):"]
    for v in result["verdicts"]:
        tag = " (configured rate)" if v["hz"] == result["control_hz"] else ""
        lines.append(f"  {v['hz']:>5} Hz{tag}: [{v['verdict']}] {v['text']}")
    lines += ["", f"overall at {result['control_hz']} Hz: {result['verdict'].upper()}"]
    if result["fixes"]:
        lines += ["", "fixes:"] + [f"  - {f}" for f in result["fixes"]]
    if result["notes"] or result["errors"]:
        lines += ["", "notes:"] + [f"  - {n}" for n in result["notes"] + result["errors"]]
    return "\n".join(lines)
