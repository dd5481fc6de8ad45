"""The latency probe run for real (about 1 s per condition): sane numbers, FIFO fallback."""

from __future__ import annotations

import os
import shutil

import pytest

from dualsys.doctor import checks, probe
from dualsys.doctor.load import StandardLoad, hold_dma_latency

CORE = max(os.sched_getaffinity(0))


def _sane(r: dict, hz: int, seconds: float) -> None:
    assert "error" not in r, r.get("error")
    assert r["core"] == CORE and r["hz"] == hz
    assert abs(r["ticks"] - hz * seconds) <= 2  # the probe counts every tick it waited for
    assert 0 <= r["p50_us"] <= r["p99_us"] <= r["p999_us"] <= r["max_us"] + 1
    assert 0 <= r["misses"] <= r["late_half"] <= r["ticks"]
    assert 0 <= r["max_streak"] <= r["misses"]


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler here")
def test_compiled_probe_quiet_and_loaded() -> None:
    pr = probe.choose("c")
    assert pr.kind == "c" and os.access(pr.exe, os.X_OK)
    with hold_dma_latency():
        quiet = probe.run_parallel(pr, [CORE], 1000, 1.0, 80)[CORE]
        with StandardLoad([CORE]) as load:
            assert all(p.poll() is None for p in load.procs)  # the burners are running
            loaded = probe.run_parallel(pr, [CORE], 1000, 1.0, 80)[CORE]
        assert all(p.poll() is not None for p in load.procs)  # and stopped afterwards
    fifo_allowed = checks.scheduler()["fifo"]
    for r in (quiet, loaded):
        _sane(r, 1000, 1.0)
        assert r["fifo"] is fifo_allowed


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler here")
def test_compiled_probe_without_fifo_says_so() -> None:
    r = probe.run_parallel(probe.choose("c"), [CORE], 200, 0.5, 0)[CORE]
    _sane(r, 200, 0.5)
    assert r["fifo"] is False


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler here")
def test_shaped_probe_computes_its_work() -> None:
    """The loop shaped like dualsys's (spin margin + work) computes a calibrated amount of work
    after each wake-up and reports how long it took: not optimised away, not a clock wait cut
    short, its max the floor for a tick's work max."""
    r = probe.run_parallel(probe.choose("c"), [CORE], 200, 0.5, 80, 400, 100)[CORE]
    _sane(r, 200, 0.5)
    assert r["work_us"] == 400 and r["spin_us"] == 100
    assert 200 <= r["work_p99_us"] <= r["work_max_us"] + 1
    assert 0 <= r["work_misses"] <= r["ticks"]


def test_python_fallback_probe_is_labelled() -> None:
    pr = probe.choose("python")
    assert pr.kind == "python" and "fallback" in pr.note
    r = probe.run_parallel(pr, [CORE], 200, 0.5, 0)[CORE]
    _sane(r, 200, 0.5)
    assert r["probe"] == "python"


def test_unknown_probe_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown probe kind"):
        probe.choose("rdtsc")
