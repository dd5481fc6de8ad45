"""The timing tests' judge: a broken budget is blamed on the machine only when its floor is."""

from __future__ import annotations

from dualsys import config
from dualsys.testing.floor import Floor, judge_misses, measure_floor

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
