"""System 1's deadline monitor: `DeadlineMonitor` plus skip-aware streaks, fast percentiles and
the per-stage breakdown of each tick's work (`StageBreakdown`).

`dualsys.timing.Histogram.pct` walks the HDR counts in Python (~180 µs per percentile here),
too slow for a 2 Hz Stats message computed between two 5 ms ticks. `Percentiles` reads the
same HDR counts through numpy (a view, no copy) and returns exactly the values hdrh would.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from dualsys.timing import DeadlineMonitor, Histogram


@functools.cache
def _index_values(lowest: int, highest: int, digits: int) -> np.ndarray:
    """For each counts index of an HDR histogram of this shape, its highest equivalent value."""
    h = Histogram(highest, digits).h
    assert h.lowest_trackable_value == lowest
    out = np.empty(h.counts_len, dtype=np.float64)
    for i in range(h.counts_len):
        out[i] = h.get_highest_equivalent_value(h.get_value_from_index(i))
    return out


@njit(cache=True, nogil=True)
def _walk(counts, values, total, ps, out):  # pragma: no cover - compiled
    """hdrh's percentile walk over the counts, for ascending ps, in one pass."""
    j = 0
    cum = 0
    for i in range(counts.shape[0]):
        c = counts[i]
        if c == 0:
            continue
        cum += c
        while j < ps.shape[0]:
            target = max(int(min(ps[j], 100.0) * total / 100 + 0.5), 1)
            if cum < target:
                break
            out[j] = values[i]
            j += 1
        if j == ps.shape[0]:
            return


class Percentiles:
    """Fast percentile read-out of one `Histogram` (same values as `Histogram.pct`)."""

    def __init__(self, hist: Histogram) -> None:
        self.hist = hist
        h = hist.h
        self.counts = np.ctypeslib.as_array(h.counts)
        self.values = _index_values(h.lowest_trackable_value, hist.highest, h.significant_figures)

    def pct(self, p: float) -> float:
        """Value at percentile p (0 < p <= 100); 0 when empty."""
        return self.many((p,))[0]

    def many(self, ps: tuple[float, ...]) -> list[float]:
        """Several percentiles (ascending) in one compiled pass over the counts (~10 µs)."""
        total = self.hist.h.total_count
        out = np.zeros(len(ps), np.float64)
        if total:
            _walk(self.counts, self.values, total, np.asarray(ps, np.float64), out)
        return out.tolist()

    def max(self) -> float:
        """Largest recorded value (hdrh tracks it on record)."""
        return self.hist.max()


class LoopMonitor(DeadlineMonitor):
    """`DeadlineMonitor` whose skipped periods extend the miss streak, plus latency histograms.

    All `tick`/`skip`/`record_*` methods are safe in the 200 Hz thread (no allocation for
    values in range).
    """

    def __init__(self, period_ns: int) -> None:
        super().__init__(period_ns)
        self.latent_age_us = Histogram()
        self.chunk_latency_us = Histogram()
        self.p_lateness = Percentiles(self.lateness_us)
        self.p_work = Percentiles(self.work_us)
        self.p_latent = Percentiles(self.latent_age_us)
        self.p_chunk = Percentiles(self.chunk_latency_us)

    def skip(self, n: int) -> None:
        """Count n whole periods skipped after an overrun: each is a miss and extends the streak."""
        super().skip(n)
        self.streak += n
        if self.streak > self.max_streak:
            self.max_streak = self.streak

    def stats_values(self, c: list[float]) -> dict[str, float]:
        """Timing part of the control process's Stats (µs for loop times, ms for ages), from
        9 percentiles the control loop computes over several ticks: lateness 50/99/99.9,
        work 50/99, latent age 50/99, chunk latency 50/99."""
        return {
            "ticks": float(self.ticks),
            "misses": float(self.misses),
            "miss_rate": self.miss_rate,
            "max_consecutive_misses": float(self.max_streak),
            "lateness_p50_us": c[0],
            "lateness_p99_us": c[1],
            "lateness_p999_us": c[2],
            "lateness_max_us": self.lateness_us.max(),
            "work_p50_us": c[3],
            "work_p99_us": c[4],
            "work_max_us": self.work_us.max(),
            "latent_age_p50_ms": c[5] / 1000,
            "latent_age_p99_ms": c[6] / 1000,
            "latent_age_max_ms": self.latent_age_us.max() / 1000,
            "chunk_latency_p50_ms": c[7] / 1000,
            "chunk_latency_p99_ms": c[8] / 1000,
        }


#: stages of one tick, in order: receive (state, latent, chunk), decide (latent age, safe
#: state), kernel (numba step), send (command frame to ZeroMQ), loop (from the wake to the
#: start of the tick) and bookkeeping (after the command left: Stats, histograms). All but
#: bookkeeping add up to the tick's work (wake to command sent).
STAGES = ("state", "latent", "chunk", "decide", "kernel", "send", "loop", "bookkeeping")
# clock stamps of one tick (monotonic ns), written into `StageBreakdown.stamps`; T_DEADLINE
# is the tick's scheduled time
T_WAKE, T_START, T_STATE, T_LATENT, T_CHUNK, T_DECIDE, T_KERNEL, T_SENT, T_DONE = range(9)
T_DEADLINE = 9
N_STAMPS = 10
#: row of the command latency (deadline to command sent: lateness plus work) in the counts
COMMAND = len(STAGES)
#: stage histograms count whole µs up to this; longer stages land in the last bucket (their
#: exact maximum is kept apart)
STAGE_CAP_US = 10_000


@njit(cache=True, nogil=True)
def record_stages(st, counts, maxs):  # pragma: no cover - compiled
    """Turn one tick's stamps into stage durations and count them (µs buckets)."""
    cap = counts.shape[1] - 1
    for s in range(6):  # state .. kernel .. send: consecutive stamps from T_START
        d = st[T_START + s + 1] - st[T_START + s]
        _count(s, d, counts, maxs, cap)
    _count(6, st[T_START] - st[T_WAKE], counts, maxs, cap)  # loop glue before the tick
    _count(7, st[T_DONE] - st[T_SENT], counts, maxs, cap)
    _count(8, st[T_SENT] - st[T_DEADLINE], counts, maxs, cap)


@njit(cache=True, nogil=True)
def _count(s, d_ns, counts, maxs, cap):  # pragma: no cover - compiled
    d = max(d_ns, 0) // 1000
    counts[s, min(d, cap)] += 1
    if d > maxs[s]:
        maxs[s] = d


class StageBreakdown:
    """Where each tick's work goes: one µs histogram per stage of `STAGES`, plus the command
    latency (deadline to command sent, row COMMAND).

    The tick writes clock stamps into `stamps` (a preallocated int64 array, indices T_*);
    `record` (one compiled call, after the command left) turns them into durations. Both are
    safe in the 200 Hz thread: no allocation, no lock.
    """

    def __init__(self) -> None:
        self.stamps = np.zeros(N_STAMPS, np.int64)
        self.counts = np.zeros((len(STAGES) + 1, STAGE_CAP_US + 1), np.int64)
        self.maxs = np.zeros(len(STAGES) + 1, np.int64)
        self._values = np.arange(STAGE_CAP_US + 1, dtype=np.float64)

    def record(self) -> None:
        """Count the stamped tick (200 Hz thread, after the send)."""
        record_stages(self.stamps, self.counts, self.maxs)

    def pcts(self, stage: int, ps: tuple[float, ...]) -> list[float]:
        """Percentiles (ascending, µs) of one stage (or COMMAND), as `Percentiles.many` (0 when
        empty)."""
        counts = self.counts[stage]
        total = int(counts.sum())
        out = np.zeros(len(ps), np.float64)
        if total:
            _walk(counts, self._values, total, np.asarray(ps, np.float64), out)
        return out.tolist()

    def summary(self, stage: int) -> dict[str, float]:
        """p50/p99/p999/max in µs of one stage (or COMMAND)."""
        p50, p99, p999 = self.pcts(stage, (50.0, 99.0, 99.9))
        return {"p50": p50, "p99": p99, "p999": p999, "max": float(self.maxs[stage])}

    def stages(self) -> dict[str, dict[str, float]]:
        """Per stage: p50/p99/p999/max in µs (the run report's `tick_stages_us`)."""
        return {name: self.summary(i) for i, name in enumerate(STAGES)}
