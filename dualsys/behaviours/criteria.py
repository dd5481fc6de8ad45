"""Building blocks of scoring criteria, for any task pack: recorded runs and their scores.

A `Trajectory` holds what any run can record (offline or live); a task pack's scorer turns one
into a `Score` with `judge` (named criteria on measured values), using `longest_run` and
`swings` for holds and oscillations. `dualsys.behaviours.evaluate` and `live_eval` build the
trajectories; the criteria themselves live in the task pack (`dualsys.tasks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Trajectory:
    """A recorded run: t (T,), q (T, n_joints), hands (T, 4, 3): left/right palm then
    left/right middle fingertip, objects: name -> (T, 3) centre positions."""

    t: np.ndarray
    q: np.ndarray
    hands: np.ndarray
    objects: dict[str, np.ndarray] = field(default_factory=dict)

    def tail(self, seconds: float) -> np.ndarray:
        """Boolean mask of the samples in the last `seconds`."""
        return self.t >= self.t[-1] - seconds


@dataclass
class Score:
    """Success and the measured values it was decided on (for tables and debugging); a failure
    names every criterion it missed in `reason`."""

    success: bool
    values: dict[str, float]
    reason: str = ""


#: One criterion: (value name, comparison, bound); comparison ">=", ">", "<=", "<" or "in"
#: (bound a (low, high) pair).
Check = tuple[str, str, float | tuple[float, float]]


def _plain(x: float) -> str:
    """A number as a person reads it: 3 significant digits, no numpy type names."""
    return f"{float(x):.3g}"


def plain_values(values: dict[str, float]) -> str:
    """Measured values as a person reads them: `name=3 significant digits`, comma-separated."""
    return ", ".join(f"{k}={_plain(v)}" for k, v in values.items())


def _plain_missed(value: float, op: str, bound) -> str:
    """A missed criterion's value, with as many digits (3 at least) as it takes for the printed
    number to miss the bound too: 0.9497 against >= 0.95 reads 0.9497, not 0.95."""
    for digits in range(3, 17):
        text = f"{float(value):.{digits}g}"
        if not _holds(float(text), op, bound):
            return text
    return repr(float(value))


def _holds(value: float, op: str, bound) -> bool:
    if op == "in":
        return bool(bound[0] <= value <= bound[1])
    return bool({">=": value >= bound, ">": value > bound, "<=": value <= bound,
                 "<": value < bound}[op])  # fmt: skip


def judge(label: str, values: dict[str, float], checks: list[Check]) -> Score:
    """Score from named criteria; values become plain floats, and the reason of a failure
    lists each missed criterion with its measured value and bound."""
    vals = {k: float(v) for k, v in values.items()}
    missed = []
    for name, op, bound in checks:
        v = vals[name]
        if not _holds(v, op, bound):
            want = (
                f"in {_plain(bound[0])}..{_plain(bound[1])}"
                if op == "in"
                else f"{op} {_plain(bound)}"
            )
            missed.append(f"{name} {_plain_missed(v, op, bound)} (needs {want})")
    return Score(not missed, vals, f"{label}: " + "; ".join(missed) if missed else "")


def longest_run(mask: np.ndarray, t: np.ndarray) -> float:
    """Longest time (s) the mask stays true."""
    best, start = 0.0, None
    for i, m in enumerate(mask):
        if m and start is None:
            start = t[i]
        if m:
            best = max(best, t[i] - start)
        else:
            start = None
    return best


def first_run_start(mask: np.ndarray, t: np.ndarray, min_s: float) -> int | None:
    """Index of the first sample that starts a run of true samples lasting at least `min_s`
    (as `longest_run` measures a run); None when no run lasts that long."""
    start = None
    for i, m in enumerate(mask):
        if not m:
            start = None
            continue
        if start is None:
            start = i
        if t[i] - t[start] >= min_s:
            return start
    return None


def swings(x: np.ndarray, t: np.ndarray, min_p2p: float) -> tuple[int, list[float]]:
    """Count direction reversals of x by >= min_p2p (hysteresis); also the swing periods."""
    ext_t: list[float] = []
    hi = lo = float(x[0])
    state = 0
    for xi, ti in zip(x, t, strict=True):
        hi, lo = max(hi, xi), min(lo, xi)
        if state >= 0 and hi - xi >= min_p2p:  # fell from a maximum
            ext_t.append(float(ti))
            state, lo = -1, xi
        elif state <= 0 and xi - lo >= min_p2p:  # rose from a minimum
            ext_t.append(float(ti))
            state, hi = 1, xi
    periods = [2 * (b - a) for a, b in zip(ext_t, ext_t[1:], strict=False)]
    return len(ext_t), periods
