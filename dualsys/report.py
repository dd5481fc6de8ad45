"""The run report of `dualsys up`: JSON (per-process summaries + budgets), a PNG, a summary.

Every process writes `{run_dir}/{role}.json` at exit; the report merges them, adds the time
series the supervisor sampled (rates, latent age), and judges the run against the budgets of
the robot config (`budget.ok` is true only when every budget held).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dualsys.config import RobotConfig
from dualsys.doctor import machine_summary
from dualsys.liveview import display_text


class History:
    """The report's time series, bounded: at most `max_points` samples whatever the run's
    length. When full, every other sample is dropped and only every 2nd (then 4th, ...) new
    sample is kept, so a long run keeps its whole span at a coarser step."""

    def __init__(self, max_points: int = 4000) -> None:
        self.max_points = max(2, max_points)
        self.points: list[dict[str, float]] = []
        self.stride = 1
        self._seen = 0

    def append(self, point: dict[str, float]) -> None:
        """Offer one sample (kept or skipped by the current stride)."""
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return
        if len(self.points) >= self.max_points:
            del self.points[1::2]
            self.stride *= 2
            if (self._seen - 1) % self.stride:
                return
        self.points.append(point)

    def __len__(self) -> int:
        return len(self.points)


def _load(run_dir: Path, role: str) -> dict[str, Any]:
    path = run_dir / f"{role}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _pick(src: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: src.get(k) for k in keys}


def build_report(
    cfg: RobotConfig,
    run_dir: Path,
    duration_s: float,
    clean_exit: bool,
    reason: str,
    history: list[dict[str, Any]] | History,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge the per-process summaries into the report dict (see README: the run report)."""
    if isinstance(history, History):
        history = list(history.points)
    c, s2, rb, pol = (_load(run_dir, r) for r in ("control", "system2", "robot", "policy"))
    system1 = _pick(
        c,
        (
            "rate_hz",
            "ticks",
            "deadline_misses",
            "skipped_periods",
            "miss_rate",
            "max_consecutive_misses",
            "lateness_us",
            "work_us",
            "tick_stages_us",
            "command_us",
            "latent_age_ms",
            "chunks",
            "chunk_latency_ms",
            "scheduler",
            "cpus",
            "safe_state_events",
            "miss_causes",
            "spin_margin",
            "idle_latency_held",
        ),
    )
    system1["policy"] = _pick(pol, ("chunks", "latency_ms", "precision", "params"))
    system2 = _pick(s2, ("rate_hz", "steps", "step_ms", "cpus", "encoder", "instruction"))
    robot = {"name": cfg.name}
    robot.update(
        _pick(
            rb,
            ("realtime_factor", "watchdog_trips", "velocity_trips", "frames", "commands_refused"),
        )
    )
    dropped: dict[str, int] = {}
    for summary in (c, s2, rb, pol):
        _add_drops(dropped, summary.get("dropped") or {})
    b = cfg.budgets
    checks = _budget_checks(cfg, system1, system2)
    report = {
        # `robot` holds the robot-side numbers and the robot's name (robot.name)
        "robot": robot,
        "robot_name": cfg.name,
        "config": str(cfg.path),
        "duration_s": round(duration_s, 3),
        "clean_exit": clean_exit,
        "reason": reason,
        "system1": system1,
        "system2": system2,
        "bus": {"dropped": dropped},
        "budget": {
            "miss_rate": b.miss_rate,
            "max_consecutive_misses": b.max_consecutive_misses,
            "latent_age_p99_ms": b.latent_age_p99_ms,
            "system2_hz": [cfg.rates.system2_min_hz, cfg.rates.system2_max_hz],
            "checks": checks,
            "ok": bool(checks) and all(v["ok"] for v in checks.values()),
        },
        "rates": {
            "control_hz": cfg.rates.control_hz,
            "system2_target_hz": cfg.rates.system2_target_hz,
        },
        "history": history,
        "overrides": list(cfg.overrides),
        # what the machine itself can hold (static checks + the last `dualsys doctor` probe),
        # so a broken budget says whether the machine or dualsys caused it
        "machine": machine_summary(cfg),
    }
    link = _load(run_dir, "link")  # System 2 on another computer (`up --system2`)
    if link:
        report["link"] = link
    if extra:
        report.update(extra)
    return report


def _add_drops(total: dict[str, int], drops: dict[str, Any]) -> None:
    """Sum drop counts per reason; nested dicts (per topic) are summed through."""
    for why, n in drops.items():
        if isinstance(n, dict):
            _add_drops(total, n)
        elif isinstance(n, (int, float)):
            total[why] = total.get(why, 0) + int(n)


def _budget_checks(
    cfg: RobotConfig, system1: dict[str, Any], system2: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    b, r = cfg.budgets, cfg.rates
    checks: dict[str, dict[str, Any]] = {}
    if system1.get("ticks"):
        checks["miss_rate"] = {
            "value": system1["miss_rate"],
            "limit": b.miss_rate,
            "ok": system1["miss_rate"] <= b.miss_rate,
        }
        checks["max_consecutive_misses"] = {
            "value": system1["max_consecutive_misses"],
            "limit": b.max_consecutive_misses,
            "ok": system1["max_consecutive_misses"] <= b.max_consecutive_misses,
        }
        rate = system1.get("rate_hz") or 0.0
        checks["control_rate_hz"] = {
            "value": rate,
            "limit": [r.control_hz * 0.99, r.control_hz * 1.01],
            "ok": abs(rate - r.control_hz) <= 0.01 * r.control_hz,
        }
        age = (system1.get("latent_age_ms") or {}).get("p99")
        if age is not None:
            checks["latent_age_p99_ms"] = {
                "value": age,
                "limit": b.latent_age_p99_ms,
                "ok": age <= b.latent_age_p99_ms,
            }
    if system2.get("steps"):
        rate = system2.get("rate_hz") or 0.0
        checks["system2_rate_hz"] = {
            "value": rate,
            "limit": [r.system2_min_hz, r.system2_max_hz],
            "ok": r.system2_min_hz <= rate <= r.system2_max_hz * 1.01,
        }
    return checks


def _plain_number(x: Any) -> str:
    """A budget value or limit as a person reads it: 4 significant digits, ranges as lo..hi."""
    if isinstance(x, (list, tuple)):
        return "..".join(_plain_number(v) for v in x)
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def budget_line(budget: dict[str, Any]) -> str:
    """'all held', or 'BROKEN: ' and each broken budget with its value and limit in plain
    numbers ('max_consecutive_misses 7 (limit 5)')."""
    if budget.get("ok"):
        return "all held"
    bad = [
        f"{name} {_plain_number(c.get('value'))} (limit {_plain_number(c.get('limit'))})"
        for name, c in (budget.get("checks") or {}).items()
        if not c.get("ok")
    ]
    return "BROKEN: " + ("; ".join(bad) or "no data")


def machine_line(m: dict[str, Any]) -> str:
    """One line on the machine under the run: scheduling, isolation and its measured floor."""
    if not m:
        return "not measured"
    parts = [
        f"FIFO {'yes' if m.get('fifo') else 'no'}",
        f"preemption {m.get('preemption', '?')}",
        "virtual machine" if m.get("virtual") else "bare metal",
        f"control core {'isolated' if m.get('control_core_isolated') else 'not isolated'}",
    ]
    last = m.get("last_doctor")
    if last:
        floor = ", ".join(last.get("verdicts") or []) or last.get("verdict", "?")
        parts.append(f"dualsys doctor {last.get('age_s', 0) // 60:.0f} min ago: {floor}")
    else:
        parts.append("no `dualsys doctor` result at this rate: run it to learn the floor")
    return "; ".join(parts)


def summary_text(report: dict[str, Any]) -> str:
    """A short human summary of the report (printed at exit)."""
    s1, s2 = report["system1"], report["system2"]
    # names and the reason can carry text from outside (a peer's handshake): printed as data
    name, reason = display_text(report["robot_name"], 64), display_text(report["reason"], 400)
    lines = [
        f"dualsys run of {name}: {report['duration_s']:.1f} s, "
        f"{'clean exit' if report['clean_exit'] else 'FAILED: ' + reason}",
    ]
    if s1.get("ticks"):
        lat, work = s1.get("lateness_us") or {}, s1.get("work_us") or {}
        age = s1.get("latent_age_ms") or {}
        lines.append(
            f"  System 1: {s1.get('rate_hz', 0):.2f} Hz, {s1['ticks']} ticks, "
            f"{s1['deadline_misses']} misses ({100 * s1['miss_rate']:.3f}%), worst streak "
            f"{s1['max_consecutive_misses']}; lateness p99 {lat.get('p99', 0):.0f} us "
            f"max {lat.get('max', 0):.0f} us; work p99 {work.get('p99', 0):.0f} us "
            f"max {work.get('max', 0):.0f} us; "
            f"latent age p99 {age.get('p99', 0):.0f} ms; {s1.get('scheduler')}"
        )
        stages = s1.get("tick_stages_us") or {}
        if stages:
            parts = ", ".join(
                f"{k} {v.get('p99', 0):.0f}/{v.get('max', 0):.0f}" for k, v in stages.items()
            )
            lines.append(f"  System 1 tick stages p99/max (us): {parts}")
    if s2.get("steps"):
        step = s2.get("step_ms") or {}
        lines.append(
            f"  System 2: {s2.get('rate_hz', 0):.2f} Hz, {s2['steps']} steps, step p50 "
            f"{step.get('p50', 0):.1f} ms p99 {step.get('p99', 0):.1f} ms"
        )
    link = report.get("link")
    if link:
        unc, rtt = link.get("offset_uncertainty_ms"), link.get("rtt_ms") or {}
        lines.append(
            f"  System 2 link {display_text(str(link.get('server')), 80)}: {link.get('latents')} "
            f"latents, clock offset {link.get('offset_s', 0):+.6f} s +- "
            f"{unc if unc is not None else float('nan'):.3f} ms, rtt p50 {rtt.get('p50', 0):.2f} "
            f"ms, latent age on arrival p99 {(link.get('latent_age_ms') or {}).get('p99', 0):.1f}"
            " ms"
        )
    rb = report["robot"]
    if rb.get("realtime_factor") is not None:
        lines.append(
            f"  Robot: real-time factor {rb['realtime_factor']:.3f}, "
            f"watchdog trips {rb.get('watchdog_trips')}"
        )
    if report["bus"]["dropped"]:
        lines.append(f"  Bus: dropped {report['bus']['dropped']}")
    if report.get("untrusted"):
        lines.append(f"  Supervisor: ignored untrusted messages {report['untrusted']}")
    budget = report["budget"]
    if s1.get("deadline_misses"):
        causes = s1.get("miss_causes") or {}
        lines.append(
            "  Misses by cause: "
            + (", ".join(f"{k} {v}" for k, v in causes.items() if v) or "not attributed")
        )
    lines.append("  Machine: " + machine_line(report.get("machine") or {}))
    lines.append("  Budgets: " + budget_line(budget))
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: Path, run_dir: Path) -> Path:
    """Write the JSON and a PNG beside it (lateness histogram, rates, latent age)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    png = path.with_suffix(".png")
    _plot(report, _load(run_dir, "control").get("lateness_hist") or [], png)
    return png


def _plot(report: dict[str, Any], hist: list[list[float]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    if hist:
        xs = [max(v, 0.5) for v, _ in hist]
        ax.bar(xs, [n for _, n in hist], width=[x * 0.2 for x in xs], color="tab:blue")
        ax.set_xscale("log")
        ax.set_yscale("log")
    lat = report["system1"].get("lateness_us") or {}
    ax.set_title(f"System 1 wake-up lateness (p99 {lat.get('p99', 0):.0f} us)")
    ax.set_xlabel("lateness [us]")
    ax.set_ylabel("ticks")
    hist_t = report.get("history") or []
    t = [h["t"] for h in hist_t]
    ax = axes[1]
    r = report.get("rates") or {}
    for key, label, target in (
        ("control_hz", "System 1", r.get("control_hz")),
        ("system2_hz", "System 2", r.get("system2_target_hz")),
        ("realtime_factor", "simulation (real-time factor)", 1.0),
    ):
        if target:
            ys = [h.get(key, float("nan")) / target for h in hist_t]
            ax.plot(t, ys, label=f"{label} (target {target:g})")
    ax.set_title("Rates over time, relative to target")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("rate / target")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    ax.plot(
        t,
        [h.get("latent_age_max_ms", float("nan")) for h in hist_t],
        color="tab:red",
        label="worst in each 0.5 s",
    )
    ax.axhline(report["budget"]["latent_age_p99_ms"], ls="--", color="gray", label="p99 budget")
    ax.set_title("Latent age (System 2 -> System 1 link)")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    # a "$" would start matplotlib mathtext (a bad formula fails the whole PNG): escaped
    name = display_text(report["robot_name"], 64).replace("$", r"\$")
    fig.suptitle(f"dualsys up --robot {name} ({report['duration_s']:.0f} s)")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
