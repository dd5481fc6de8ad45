"""Real-time-chunking bookkeeping: which actions run, which to freeze, when to replan.

Times are monotonic ns. A chunk is H actions on a grid: action i is due at t0 + i*dt. An
action counts as executed once its due time has passed. The policy process plans the next
chunk on the same grid as the one the control process is executing, so that the actions that
will run before the new chunk can arrive (the measured inference delay) are frozen, plus one
action on each side so the spline segment in use at hand-over is identical in both chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: extra frozen actions beyond the delay: the hand-over segment and its two tangents
SUPPORT = 3


@dataclass
class Chunk:
    """A chunk as the policy sent it (joint space, controlled joints)."""

    actions: np.ndarray
    t0_ns: int
    dt_ns: int
    chunk_id: int = 0

    @property
    def horizon(self) -> int:
        return len(self.actions)

    def executed(self, now_ns: int) -> int:
        """Number of actions whose due time has passed at now_ns (0..H)."""
        if now_ns < self.t0_ns:
            return 0
        return min(self.horizon, (now_ns - self.t0_ns) // self.dt_ns + 1)

    def remaining(self, now_ns: int) -> int:
        """Unexecuted actions at now_ns."""
        return self.horizon - self.executed(now_ns)


@dataclass
class Plan:
    """How to generate the next chunk: its grid start, the overlap and the frozen count."""

    t0_ns: int
    prefix: np.ndarray  # (m, A): old actions overlapping the new chunk's first m slots
    weights: np.ndarray  # (m,): 1 frozen, decaying soft guidance after
    frozen: int


#: soft-guidance weight decay per action over the overlap with the previous chunk
GUIDANCE_DECAY = 0.6
#: frozen actions beyond the delay while settling after an instruction switch (`plan_next`)
SETTLE_SUPPORT = 1


def needs_replan(current: Chunk | None, now_ns: int, replan_below: int) -> bool:
    """True when there is no chunk or its unexecuted part fell below the threshold."""
    return current is None or current.remaining(now_ns) < replan_below


def plan_next(
    current: Chunk | None,
    now_ns: int,
    delay_ns: int,
    dt_ns: int,
    hold: np.ndarray | None = None,
    settling: bool = False,
) -> Plan:
    """Plan the next chunk given the one being executed and the expected inference delay.

    With a current chunk that still has actions left, the new chunk starts one action before
    the first unexecuted one (same grid); the actions due before now + delay (+ SUPPORT) are
    frozen; the rest of the overlap gets soft-guidance weights decaying by `GUIDANCE_DECAY`
    per action. Without one (cold start or the chunk ran out), the new chunk starts at
    now + delay and its first action is frozen to `hold` (the pose being held), if given.

    settling (the robot config's `policy.switch_settle_ms` after a new instruction): only
    SETTLE_SUPPORT actions beyond the delay are frozen and the rest of the old chunk gives
    no guidance, so the old task's motion is not carried into the new one. A policy trained
    with prefix conditioning continues the motion its frozen actions show, so freezing fewer
    actions lets a new instruction stop the old motion (a wave's swing is not carried into
    "return to rest"). Settling for the whole task instead stops the waves and open/close, which
    carry their phase in the frozen actions (benchmarks/results/behaviours.md).
    """
    if current is not None and current.remaining(now_ns) > 0:
        k0 = max(0, current.executed(now_ns) - 1)
        t0 = current.t0_ns + k0 * current.dt_ns
        prefix = current.actions[k0:]
        support = SETTLE_SUPPORT if settling else SUPPORT
        need = -(-(now_ns + delay_ns - t0) // current.dt_ns) + support
        frozen = int(min(len(prefix), max(need, 1)))
        weights = np.ones(len(prefix), np.float32)
        free = np.arange(1, len(prefix) - frozen + 1, dtype=np.float32)
        weights[frozen:] = 0.0 if settling else GUIDANCE_DECAY**free
        return Plan(t0, prefix, weights, frozen)
    t0 = now_ns + delay_ns
    if hold is None:
        return Plan(t0, np.zeros((0, 0), np.float32), np.zeros(0, np.float32), 0)
    return Plan(t0, hold[None].astype(np.float32), np.ones(1, np.float32), 1)


class Settling:
    """Whether chunks are planned in settling mode (`plan_next`): for `settle_ns` after each
    new instruction (the robot config's `policy.switch_settle_ms`; 0 = never). Used by the
    policy process and the offline evaluator alike."""

    def __init__(self, settle_ns: int) -> None:
        self.settle_ns = settle_ns
        self.since_ns: int | None = None  # when the newest instruction's first chunk was planned

    def at(self, now_ns: int, new_task: bool) -> bool:
        """Settling for a chunk planned at now_ns (new_task: the first one of an instruction)."""
        if new_task:
            self.since_ns = now_ns
        return self.since_ns is not None and now_ns - self.since_ns < self.settle_ns


def back_to_back(now_ns: int, delay_ns: int) -> Plan:
    """Baseline (GR00T / openpi servers): no overlap, the new chunk starts when it arrives."""
    return Plan(now_ns + delay_ns, np.zeros((0, 0), np.float32), np.zeros(0, np.float32), 0)


class DelayEstimator:
    """Inference delay estimate: the median of the last `window` latencies times a margin.

    The first `warmup` samples (cold caches, lazy init) are ignored so a start-up spike does
    not inflate the estimate for the whole run. The median, not the maximum: every action
    frozen beyond the real delay is one the policy did not choose from the newest state, and
    that measurably hurts (trained GR-1 policy, waves offline with 4 / 5 / 8 frozen actions:
    14 / 12 / 7 of 16 episodes succeed; benchmarks/results/behaviours.md); a chunk that
    arrives later than estimated is merged by the control loop's seam blend instead.
    """

    def __init__(
        self,
        initial_ns: int,
        window: int = 16,
        margin: float = 1.25,
        warmup: int = 2,
        quantile: float = 50.0,
    ):
        self.buf = np.full(window, initial_ns, np.int64)
        self.n = 0
        self.margin, self.warmup, self.quantile = margin, warmup, quantile

    def add(self, latency_ns: int) -> None:
        """Record one measured chunk latency."""
        self.n += 1
        if self.n > self.warmup:
            self.buf[self.n % len(self.buf)] = latency_ns

    @property
    def estimate_ns(self) -> int:
        return int(np.percentile(self.buf, self.quantile) * self.margin)
