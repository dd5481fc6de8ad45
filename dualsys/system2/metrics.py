"""System 2's own measurements: step-time split, achieved rate, input age, CPU share.

Everything lives in HDR histograms (fixed memory). `stats_values()` feeds the periodic Stats
message, `summary()` the `{run_dir}/system2.json` report.
"""

from __future__ import annotations

import time

from dualsys.system2.encoders.base import EncodeResult
from dualsys.timing import Histogram


class StepMetrics:
    """Per-step timings (µs histograms), rate over the whole run and over the last window."""

    def __init__(self) -> None:
        self.step_us = Histogram()
        self.text_us = Histogram()
        self.text_cached_us = Histogram()
        self.text_uncached_us = Histogram()
        self.vision_us = Histogram()
        self.fusion_us = Histogram()
        self.frame_age_us = Histogram()
        self.state_age_us = Histogram()
        self.steps = 0
        self.overruns = 0
        self.first_start_ns = 0
        self.last_start_ns = 0
        self.last_frame_age_ms = 0.0
        self._win_steps = 0
        self._win_t_ns = time.monotonic_ns()
        self._cpu0 = time.process_time()
        self._wall0 = time.monotonic()
        self._win_cpu = self._cpu0
        self._win_wall = self._wall0

    def record(
        self, start_ns: int, step_ns: int, res: EncodeResult, frame_age_ns: int, state_age_ns: int
    ) -> None:
        """Record one finished step (start time, wall time of the step, its split, input ages)."""
        if not self.steps:
            self.first_start_ns = start_ns
        self.last_start_ns = start_ns
        self.steps += 1
        self._win_steps += 1
        self.step_us.record(step_ns // 1000)
        text_us = res.text_ms * 1000
        self.text_us.record(text_us)
        (self.text_cached_us if res.text_cached else self.text_uncached_us).record(text_us)
        self.vision_us.record(res.vision_ms * 1000)
        self.fusion_us.record(res.fusion_ms * 1000)
        self.frame_age_us.record(frame_age_ns // 1000)
        self.state_age_us.record(state_age_ns // 1000)
        self.last_frame_age_ms = frame_age_ns / 1e6

    def rate_hz(self) -> float:
        """Achieved step rate over the whole run (0 before the second step)."""
        if self.steps < 2:
            return 0.0
        return (self.steps - 1) / ((self.last_start_ns - self.first_start_ns) / 1e9)

    def cpu_share(self) -> float:
        """CPU time of this process (all threads) / wall time, since start."""
        wall = time.monotonic() - self._wall0
        return (time.process_time() - self._cpu0) / wall if wall > 0 else 0.0

    def window(self) -> tuple[float, float]:
        """(rate_hz, cpu_share) since the previous call (for live Stats)."""
        now_ns, cpu, wall = time.monotonic_ns(), time.process_time(), time.monotonic()
        dt = (now_ns - self._win_t_ns) / 1e9
        rate = self._win_steps / dt if dt > 0 else 0.0
        share = (cpu - self._win_cpu) / (wall - self._win_wall) if wall > self._win_wall else 0.0
        self._win_steps, self._win_t_ns, self._win_cpu, self._win_wall = 0, now_ns, cpu, wall
        return rate, share

    def stats_values(
        self, instruction_id: int, dropped: int, stale_skips: int = 0
    ) -> dict[str, float]:
        """The values of System 2's periodic Stats message."""
        rate, share = self.window()
        return {
            "rate_hz": rate,
            "steps": self.steps,
            "step_p50_ms": self.step_us.pct(50) / 1000,
            "step_p99_ms": self.step_us.pct(99) / 1000,
            "text_ms_p50": self.text_us.pct(50) / 1000,
            "vision_ms_p50": self.vision_us.pct(50) / 1000,
            "fusion_ms_p50": self.fusion_us.pct(50) / 1000,
            "instruction_id": float(instruction_id),
            "dropped": dropped,
            "frame_age_ms": self.last_frame_age_ms,
            "overruns": self.overruns,
            "cpu_share": share,
            "stale_skips": stale_skips,
        }

    def summary(self) -> dict[str, object]:
        """Timing part of system2.json."""

        def p50_p99(h: Histogram) -> dict[str, float]:
            return {"p50": h.pct(50) / 1000, "p99": h.pct(99) / 1000, "max": h.max() / 1000}

        return {
            "rate_hz": self.rate_hz(),
            "steps": self.steps,
            "overruns": self.overruns,
            "step_ms": p50_p99(self.step_us),
            "text_ms": {
                "cached_p50": self.text_cached_us.pct(50) / 1000,
                "cached_p99": self.text_cached_us.pct(99) / 1000,
                "uncached_p50": self.text_uncached_us.pct(50) / 1000,
                "uncached_p99": self.text_uncached_us.pct(99) / 1000,
                "cached_count": self.text_cached_us.count,
                "uncached_count": self.text_uncached_us.count,
            },
            "vision_ms": p50_p99(self.vision_us),
            "fusion_ms": p50_p99(self.fusion_us),
            "frame_age_ms": p50_p99(self.frame_age_us),
            "state_age_ms": p50_p99(self.state_age_us),
            "cpu_share": self.cpu_share(),
        }
