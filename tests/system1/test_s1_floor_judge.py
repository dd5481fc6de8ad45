"""The timing tests' judge: a broken budget is blamed on the machine only when its floor is."""

from __future__ import annotations

import time

from dualsys import config
from dualsys.testing.floor import Floor, FloorBeside, judge_misses, measure_floor

QUIET = Floor(ticks=4000, misses=0, p99_us=100.0, max_us=900.0, probe="c")
STALLING = Floor(ticks=4000, misses=40, p99_us=3000.0, max_us=9000.0, probe="c")  # 1%


def test_budget_held_passes():
    ok, why = judge_misses(5, 4000, 0.002, [QUIET])
    assert ok and "budget held" in why


def test_broken_budget_on_a_quiet_machine_blames_dualsys():
    ok, why = judge_misses(20, 4000, 0.002, [QUIET])
    assert not ok and "dualsys is to blame" in why and "0.500%" in why


def test_broken_budget_on_a_machine_that_cannot_hold_it():
    ok, why = judge_misses(50, 4000, 0.002, [QUIET, STALLING])  # worst floor counts
    assert ok and "machine cannot hold" in why
    ok, why = judge_misses(70, 4000, 0.002, [STALLING])  # 1.75% > 1.5 x 1%
    assert not ok and "more than 1.5x" in why


def test_floor_probe_on_the_control_core():
    cfg = config.load_robot("gr1")
    f = measure_floor(cfg, 0.5)
    assert abs(f.ticks - 0.5 * cfg.rates.control_hz) <= 2
    assert 0 <= f.misses <= f.ticks and 0 <= f.p99_us <= f.max_us


def test_floor_beside_covers_the_run_it_was_stopped_after():
    """Started long, stopped when the run ends: the ticks of the window, FIFO above the loop,
    and its label says it ran beside the run; stopping twice gives the same floor."""
    cfg = config.load_robot("gr1")
    with FloorBeside(cfg) as beside:
        time.sleep(1.5)
        f = beside.stop()
        assert beside.stop() is f
    assert beside.proc.returncode == 0
    # the probe's own start-up (exec, pin, FIFO, mlock) precedes its first tick
    assert 1.0 * cfg.rates.control_hz <= f.ticks <= 1.5 * cfg.rates.control_hz + 2
    assert "beside the run" in f.text() and 0 <= f.misses <= f.ticks


def test_floor_beside_left_without_stop_is_killed():
    cfg = config.load_robot("gr1")
    with FloorBeside(cfg) as beside:
        pass
    assert beside.proc.poll() is not None and beside.floor is None
