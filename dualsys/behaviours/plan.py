"""Joint-space motion plans: minimum-jerk moves, holds and smooth oscillations.

A `Plan` is a function of time: `plan(t)` gives the full joint target vector (config joint
order). Move durations are chosen from the displacement so that peak velocity and peak
acceleration stay below a fraction (`SPEED`) of each joint's velocity limit and its group's
acceleration limit (robots/<robot>.toml); oscillation frequencies are checked the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Fraction of the configured velocity/acceleration limits the expert may use.
SPEED = 0.45
#: Minimum-jerk peak velocity and acceleration factors (times delta/T and delta/T^2).
MJ_VEL, MJ_ACC = 1.875, 5.774


def min_jerk(s: float) -> float:
    """Minimum-jerk blend 0 -> 1 for s in [0, 1] (zero velocity and acceleration at ends)."""
    s = min(max(s, 0.0), 1.0)
    return s**3 * (10 - 15 * s + 6 * s * s)


@dataclass
class _Segment:
    t0: float
    t1: float
    q0: np.ndarray
    q1: np.ndarray
    osc_dir: np.ndarray | None = None
    osc_freq: float = 0.0
    osc_ramp: float = 0.0
    osc_one_sided: bool = False


class Plan:
    """A piecewise joint trajectory starting at `q_start` (config joint order, radians)."""

    def __init__(self, q_start: np.ndarray, limits: dict[str, np.ndarray]) -> None:
        self.vel = limits["velocity"] * SPEED
        self.acc = limits["accel"] * SPEED
        self.lo, self.hi = limits["min"], limits["max"]
        self.segments: list[_Segment] = []
        self.t_end = 0.0
        self.q_end = np.clip(np.asarray(q_start, np.float64), self.lo, self.hi)

    def duration_for(self, q_to: np.ndarray, min_s: float = 0.4) -> float:
        """Shortest min-jerk duration from the plan's end to q_to inside the limit fractions."""
        d = np.abs(q_to - self.q_end)
        t_vel = float(np.max(MJ_VEL * d / self.vel))
        t_acc = float(np.max(np.sqrt(MJ_ACC * d / self.acc)))
        return max(min_s, t_vel, t_acc)

    def move(self, q_to: np.ndarray, min_s: float = 0.4, slow: float = 1.0) -> Plan:
        """Minimum-jerk move to q_to (clipped to the limits); `slow` >= 1 stretches it."""
        q_to = np.clip(np.asarray(q_to, np.float64), self.lo, self.hi)
        t = self.duration_for(q_to, min_s) * slow
        self.segments.append(_Segment(self.t_end, self.t_end + t, self.q_end.copy(), q_to))
        self.t_end += t
        self.q_end = q_to
        return self

    def hold(self, seconds: float) -> Plan:
        """Stay at the current end pose."""
        q = self.q_end.copy()
        self.segments.append(_Segment(self.t_end, self.t_end + seconds, q, q))
        self.t_end += seconds
        return self

    def oscillate(
        self, direction: np.ndarray, freq: float, seconds: float, one_sided: bool = False
    ) -> Plan:
        """q_end + direction * sin(2 pi f t), amplitude ramped in over one period.

        one_sided: q_end + direction * (1 - cos(2 pi f t)) instead (swings between q_end and
        q_end + 2 direction, starting at rest; no ramp).

        Raises ValueError when the oscillation would exceed the velocity/acceleration limits.
        """
        w = 2 * math.pi * freq
        a = np.abs(direction)
        if np.any(a * w > self.vel * 1.25) or np.any(a * w * w > self.acc * 1.25):
            raise ValueError(f"oscillation at {freq} Hz exceeds the expert's limit fractions")
        q = self.q_end.copy()
        self.segments.append(
            _Segment(
                self.t_end,
                self.t_end + seconds,
                q,
                q,
                np.asarray(direction),
                freq,
                1 / freq,
                one_sided,
            )
        )
        self.t_end += seconds
        return self

    def __call__(self, t: float) -> np.ndarray:
        """Joint targets at time t (the end pose after the last segment)."""
        for seg in self.segments:
            if t < seg.t1:
                break
        else:
            if not self.segments or self.segments[-1].osc_dir is None:
                return self.q_end.copy()
            seg = self.segments[-1]
        if seg.osc_dir is not None:
            tau = t - seg.t0
            if seg.osc_one_sided:
                return seg.q0 + seg.osc_dir * (1 - math.cos(2 * math.pi * seg.osc_freq * tau))
            ramp = min_jerk(tau / seg.osc_ramp)
            return seg.q0 + seg.osc_dir * ramp * math.sin(2 * math.pi * seg.osc_freq * tau)
        s = (t - seg.t0) / max(seg.t1 - seg.t0, 1e-9)
        return seg.q0 + (seg.q1 - seg.q0) * min_jerk(s)

    def sample(self, times: np.ndarray) -> np.ndarray:
        """(T, n) targets at the given times."""
        return np.stack([self(float(t)) for t in times])

    def velocity(self, t: float, h: float = 1e-3) -> np.ndarray:
        """Target velocity at t (central difference)."""
        return (self(t + h) - self(max(t - h, 0.0))) / (t + h - max(t - h, 0.0))
