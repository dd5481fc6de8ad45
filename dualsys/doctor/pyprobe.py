"""Python fallback of probe.c (used when no C compiler and no cyclictest): same loop, same JSON.

Run as `python -m dualsys.doctor.pyprobe CORE HZ SECONDS PRIO`. The wait is libc's absolute
clock_nanosleep through ctypes; the numbers include the interpreter's own jitter. SIGTERM or
SIGINT ends the run early with the result of the ticks measured so far (as probe.c does).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import signal
import sys
import time

from dualsys.system1.rt import AbsoluteSleep

WARMUP_TICKS = 5


def _pct(hist: dict[int, int], n: int, p: float) -> int:
    want, seen = max(1, int(n * p / 100 + 0.999999)), 0
    for us in sorted(hist):
        seen += hist[us]
        if seen >= want:
            return us
    return 0


def run(core: int, hz: int, seconds: float, prio: int) -> dict:
    """Measure wake-up lateness on `core` at `hz`; the probe.c result fields."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    res: dict = {"probe": "python", "core": core, "hz": hz, "fifo": False, "fifo_error": ""}
    res["pin_error"] = ""
    try:
        os.sched_setaffinity(0, {core})
    except OSError as exc:
        res["pin_error"] = exc.strerror or str(exc)
    if prio > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
            res["fifo"] = True
        except OSError as exc:
            res["fifo_error"] = exc.strerror or str(exc)
    res["mlocked"] = libc.mlockall(3) == 0
    gc.disable()
    period = 1_000_000_000 // hz
    n = round(seconds * hz)
    hist: dict[int, int] = {}
    ticks = misses = late_half = streak = max_streak = 0
    max_late = total = 0
    sleep_to = AbsoluteSleep()
    stop = [False]

    def on_stop(_sig: int, _frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    nxt = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + period
    for i in range(n + WARMUP_TICKS):
        sleep_to(nxt)
        if stop[0]:
            break
        late = max(0, time.clock_gettime_ns(time.CLOCK_MONOTONIC) - nxt)
        nxt += period
        if i < WARMUP_TICKS:
            continue
        us = late // 1000
        hist[us] = hist.get(us, 0) + 1
        total += late
        max_late = max(max_late, late)
        late_half += late > period // 2
        if late > period:
            misses += 1
            streak += 1
            max_streak = max(max_streak, streak)
        else:
            streak = 0
        ticks += 1
    res.update(
        ticks=ticks,
        p50_us=_pct(hist, ticks, 50),
        p99_us=_pct(hist, ticks, 99),
        p999_us=_pct(hist, ticks, 99.9),
        max_us=round(max_late / 1000, 1),
        mean_us=round(total / 1000 / max(1, ticks), 1),
        misses=misses,
        late_half=late_half,
        max_streak=max_streak,
    )
    return res


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: python -m dualsys.doctor.pyprobe CORE HZ SECONDS PRIO")
    a = sys.argv[1:]
    print(json.dumps(run(int(a[0]), int(a[1]), float(a[2]), int(a[3]))))
