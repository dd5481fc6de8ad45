"""Timing measurement shared by every process: HDR histograms, deadline monitor, CPU helpers.

Numbers are kept in HDR histograms (fixed memory, no growing lists). `Histogram.record` does no
Python-level allocation for values inside its range, so it is safe in the 200 Hz thread.
"""

from __future__ import annotations

import os
import sys

from hdrh.histogram import HdrHistogram


class Histogram:
    """An HDR histogram of non-negative integers (e.g. microseconds), 3 significant digits.

    Values above `highest` are clamped to it and counted in `clamped`.
    """

    def __init__(self, highest: int = 60_000_000, digits: int = 3) -> None:
        self.highest = highest
        self.h = HdrHistogram(1, highest, digits)
        self.clamped = 0

    def record(self, value: int | float) -> None:
        """Record one value (safe in the 200 Hz thread)."""
        v = int(value)
        if v < 0:
            v = 0
        elif v > self.highest:
            v = self.highest
            self.clamped += 1
        self.h.record_value(v)

    @property
    def count(self) -> int:
        return self.h.get_total_count()

    def pct(self, p: float) -> float:
        """Value at percentile p (0-100); 0 when empty."""
        return float(self.h.get_value_at_percentile(p)) if self.count else 0.0

    def max(self) -> float:
        return float(self.h.get_max_value()) if self.count else 0.0

    def summary(self, scale: float = 1.0) -> dict[str, float]:
        """p50/p99/p999/max (divided by scale) and count."""
        return {
            "p50": self.pct(50) / scale,
            "p99": self.pct(99) / scale,
            "p999": self.pct(99.9) / scale,
            "max": self.max() / scale,
            "count": self.count,
        }

    def buckets(self) -> list[tuple[float, int]]:
        """(value, count) pairs of the recorded distribution, for plots."""
        out = []
        for item in self.h.get_recorded_iterator():
            out.append((float(item.value_iterated_to), int(item.count_at_value_iterated_to)))
        return out


class DeadlineMonitor:
    """Per-tick timing of a periodic loop: wake-up lateness, work time, misses and streaks.

    Call `tick(lateness_ns, work_ns, missed)` once per cycle from the loop thread (no
    allocation, no lock). A tick is a miss when its output left after its deadline.
    """

    def __init__(self, period_ns: int) -> None:
        self.period_ns = period_ns
        self.lateness_us = Histogram()
        self.work_us = Histogram()
        self.ticks = 0
        self.misses = 0
        self.skipped = 0
        self.streak = 0
        self.max_streak = 0

    def tick(self, lateness_ns: int, work_ns: int, missed: bool) -> None:
        """Record one cycle (safe in the 200 Hz thread)."""
        self.ticks += 1
        self.lateness_us.record(lateness_ns // 1000)
        self.work_us.record(work_ns // 1000)
        if missed:
            self.misses += 1
            self.streak += 1
            if self.streak > self.max_streak:
                self.max_streak = self.streak
        else:
            self.streak = 0

    def skip(self, n: int) -> None:
        """Count n whole periods skipped (not caught up) after an overrun; each is a miss."""
        self.skipped += n
        self.misses += n
        self.ticks += n

    @property
    def miss_rate(self) -> float:
        return self.misses / self.ticks if self.ticks else 0.0

    def summary(self) -> dict[str, object]:
        """Final numbers for the run report."""
        return {
            "ticks": self.ticks,
            "deadline_misses": self.misses,
            "skipped": self.skipped,
            "miss_rate": self.miss_rate,
            "max_consecutive_misses": self.max_streak,
            "lateness_us": self.lateness_us.summary(),
            "work_us": self.work_us.summary(),
        }


def pin_to_core(core: int) -> str:
    """Pin this process to one core; returns a note (empty when pinned as asked)."""
    n = os.cpu_count() or 1
    if core >= n:
        return f"core {core} does not exist ({n} cores): not pinned"
    try:
        os.sched_setaffinity(0, {core})
    except OSError as exc:
        return f"cannot pin to core {core}: {exc.strerror}"
    return ""


def current_cpus() -> list[int]:
    """The cores this process may run on."""
    return sorted(os.sched_getaffinity(0))


def warn_once(message: str) -> None:
    """Print a one-line warning to stderr (used for start-up fallbacks, never per tick)."""
    print(f"dualsys: warning: {message}", file=sys.stderr, flush=True)


#: Niceness of the non-real-time dualsys processes (System 2, policy, robot) when permitted:
#: ahead of unrelated background work on the robot computer, behind the SCHED_FIFO loops.
PROCESS_NICE = -5


def raise_priority(nice: int = PROCESS_NICE) -> str:
    """Lower this process's niceness to `nice` (root only); returns a note when refused."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        return f"cannot raise priority to nice {nice} ({exc.strerror}); running at nice 0"
    return ""


def prioritise_process() -> None:
    """`raise_priority`, warning once when refused (non-root users)."""
    note = raise_priority()
    if note:
        warn_once(note)
