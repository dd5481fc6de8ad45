"""Budget verdicts: the machine's measured floor against a robot config's timing budgets.

A probe tick that wakes late by more than a period is a miss no control loop on that machine
can avoid, so the probe's miss rate and streaks are the floor under the loop's own. Per budget
and condition: 'cannot hold' when the floor alone breaks the budget, 'at risk' when it uses
more than half of it (or ticks late by half a period, which the loop's own work turns into
misses, exceed it), else 'holds'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

HOLDS, AT_RISK, CANNOT, UNKNOWN = "holds", "at risk", "cannot hold", "unknown"
_ORDER = {HOLDS: 0, UNKNOWN: 1, AT_RISK: 2, CANNOT: 3}


@dataclass(frozen=True)
class Floor:
    """One probe's result on the control core: what the machine gives a loop at `hz`."""

    condition: str
    hz: int
    ticks: int
    misses: int
    late_half: int
    max_streak: int | None
    p99_us: float
    p999_us: float

    @classmethod
    def from_result(cls, condition: str, r: dict) -> Floor:
        return cls(condition, r["hz"], r["ticks"], r["misses"], r["late_half"],
                   r.get("max_streak"), r["p99_us"], r["p999_us"])  # fmt: skip

    @property
    def miss_rate(self) -> float:
        return self.misses / self.ticks if self.ticks else 0.0


def worst(verdicts: list[str]) -> str:
    """The most severe of several verdicts ('holds' for none)."""
    return max(verdicts, key=_ORDER.__getitem__, default=HOLDS)


#: A probe must allow at least this many misses at the budget before 'holds' means anything.
MIN_ALLOWED_MISSES = 2


def miss_rate(budget: float, f: Floor) -> str:
    """Miss-rate budget (fraction of ticks) against the floor's miss rate; 'unknown' when the
    floor looks clean but the probe was too short to tell (fewer than 2 misses allowed)."""
    if f.miss_rate > budget:
        return CANNOT
    if f.miss_rate > budget / 2 or (f.late_half / f.ticks if f.ticks else 0.0) > budget:
        return AT_RISK
    return HOLDS if f.ticks * budget >= MIN_ALLOWED_MISSES else UNKNOWN


def streak(budget: int, f: Floor) -> str:
    """Longest run of misses allowed against the floor's longest streak."""
    if f.max_streak is None:
        return UNKNOWN
    if f.max_streak > budget:
        return CANNOT
    return AT_RISK if 2 * f.max_streak > budget else HOLDS


def spin_margin(margin_us: float, f: Floor) -> str:
    """The loop's spin margin against wake-up lateness: a p99 past it means late ticks."""
    period_us = 1e6 / f.hz
    if f.p99_us > period_us:
        return CANNOT
    if f.p99_us > margin_us or margin_us >= period_us / 2:
        return AT_RISK
    return HOLDS


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def judge(budgets, floors: list[Floor]) -> list[dict]:
    """Verdicts for every budget at every rate in `floors` (all measured on the control core).

    `budgets` is a `dualsys.config.Budgets`, or a mapping from rate to the budgets the loop
    has at that rate (`config.budgets_at`: what `dualsys up --control-hz` runs with; the
    spin margin and miss streak follow the rate). Returns one dict per (rate, budget): the verdict
    per condition, the worst of them, and a line such as "miss budget 0.20%: machine floor
    quiet 0.40% -> cannot hold; loaded 0.02% -> holds".
    """
    out = []
    for hz in sorted({f.hz for f in floors}):
        at = [f for f in floors if f.hz == hz]
        b = budgets[hz] if isinstance(budgets, Mapping) else budgets
        rows = (
            ("miss_rate", b.miss_rate, f"miss budget {_pct(b.miss_rate)}",
             lambda f, b=b: miss_rate(b.miss_rate, f), lambda f: _pct(f.miss_rate)),
            ("max_consecutive_misses", b.max_consecutive_misses,
             f"misses in a row <= {b.max_consecutive_misses}",
             lambda f, b=b: streak(b.max_consecutive_misses, f),
             lambda f: "?" if f.max_streak is None else str(f.max_streak)),
            ("spin_margin_us", b.spin_margin_us,
             f"spin margin {b.spin_margin_us} µs",
             lambda f, b=b: spin_margin(b.spin_margin_us, f),
             lambda f: f"p99 {f.p99_us:g} µs"),
        )  # fmt: skip
        for key, limit, label, rule, shown in rows:
            conds = {f.condition: {"floor": shown(f), "verdict": rule(f)} for f in at}
            text = f"{label}: machine floor " + "; ".join(
                f"{c} {v['floor']} -> {v['verdict']}" for c, v in conds.items()
            )
            if key == "spin_margin_us" and limit >= 5e5 / hz:
                text += f" (>= half the {1e6 / hz:g} µs period: the spin starves the policy)"
            out.append(
                {
                    "hz": hz,
                    "budget": key,
                    "limit": limit,
                    "conditions": conds,
                    "verdict": worst([v["verdict"] for v in conds.values()]),
                    "text": text,
                }
            )
    return out


def resolution_note(budget: float, floors: list[Floor]) -> str:
    """A warning when a probe was too short to resolve the miss budget ('' when it was not)."""
    short = [f for f in floors if f.ticks * budget < MIN_ALLOWED_MISSES]
    if not short:
        return ""
    f = min(short, key=lambda f: f.ticks)
    return (
        f"short probe: {f.ticks} ticks at {f.hz} Hz allow {f.ticks * budget:.1f} misses at the "
        f"{_pct(budget)} budget; run with a larger --seconds for a firmer verdict"
    )
