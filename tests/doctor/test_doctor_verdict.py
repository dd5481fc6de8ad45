"""Verdict logic (floors + budgets -> holds / at risk / cannot hold) and the fixes it names."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dualsys import config
from dualsys.doctor import fixes, verdict
from dualsys.doctor.verdict import AT_RISK, CANNOT, HOLDS, UNKNOWN, Floor

BUDGETS = config.load_robot("gr1").budgets  # miss 0.2%, 5 in a row, spin margin 1000 µs


def floor(cond="quiet", hz=200, ticks=10_000, misses=0, late_half=0, streak=0, p99=100.0):
    return Floor(cond, hz, ticks, misses, late_half, streak, p99, p99 * 2)


@pytest.mark.parametrize(
    ("f", "want"),
    [
        (floor(misses=40, streak=1), CANNOT),  # 0.4% > 0.2%
        (floor(misses=15, late_half=15), AT_RISK),  # 0.15%: more than half the budget
        (floor(misses=2, late_half=30), AT_RISK),  # half-period-late ticks exceed the budget
        (floor(misses=2, late_half=5), HOLDS),  # 0.02%
        (floor(ticks=200), UNKNOWN),  # 200 ticks allow 0.4 misses: too short to say
    ],
)
def test_miss_rate(f: Floor, want: str) -> None:
    assert verdict.miss_rate(BUDGETS.miss_rate, f) == want


def test_streak_and_spin_margin() -> None:
    assert verdict.streak(5, floor(streak=6)) == CANNOT
    assert verdict.streak(5, floor(streak=3)) == AT_RISK
    assert verdict.streak(5, floor(streak=2)) == HOLDS
    assert verdict.streak(5, replace(floor(), max_streak=None)) == UNKNOWN
    assert verdict.spin_margin(1000, floor(p99=300)) == HOLDS
    assert verdict.spin_margin(1000, floor(p99=1500)) == AT_RISK
    assert verdict.spin_margin(1000, floor(p99=6000)) == CANNOT
    assert verdict.spin_margin(1000, floor(hz=1000, p99=50)) == AT_RISK  # margin = whole period


def test_judge_reports_each_condition_and_the_worst() -> None:
    quiet = floor("quiet", misses=40, late_half=40, streak=2)
    loaded = floor("loaded", misses=2, late_half=2, streak=1)
    rows = {v["budget"]: v for v in verdict.judge(BUDGETS, [quiet, loaded])}
    miss = rows["miss_rate"]
    assert miss["conditions"]["quiet"]["verdict"] == CANNOT
    assert miss["conditions"]["loaded"]["verdict"] == HOLDS
    assert miss["verdict"] == CANNOT
    assert miss["text"] == (
        "miss budget 0.20%: machine floor quiet 0.40% -> cannot hold; loaded 0.02% -> holds"
    )
    assert rows["max_consecutive_misses"]["verdict"] == HOLDS
    assert verdict.worst([HOLDS, AT_RISK, UNKNOWN]) == AT_RISK


def test_judge_uses_each_rates_own_budgets() -> None:
    """At 1 kHz the loop runs with the spin margin and streak `--control-hz 1000` sets (200 µs,
    25 ticks), not the 200 Hz config's 1000 µs (the whole period) and 5."""
    cfg = config.load_robot("gr1")
    at = {hz: config.budgets_at(cfg, hz) for hz in (200, 1000)}
    assert at[200] == cfg.budgets
    assert (at[1000].spin_margin_us, at[1000].max_consecutive_misses) == (200, 25)
    fl = [floor(hz=200, p99=50), floor(hz=1000, ticks=50_000, p99=50, streak=6)]
    rows = {(v["hz"], v["budget"]): v for v in verdict.judge(at, fl)}
    assert rows[(1000, "spin_margin_us")]["verdict"] == HOLDS
    assert rows[(1000, "spin_margin_us")]["text"].startswith("spin margin 200 µs")
    assert rows[(1000, "max_consecutive_misses")]["verdict"] == HOLDS  # 6 of 25
    # with one budget set for every rate, the same floor reads as at risk / cannot hold
    one = {(v["hz"], v["budget"]): v for v in verdict.judge(cfg.budgets, fl)}
    assert one[(1000, "spin_margin_us")]["verdict"] == AT_RISK
    assert one[(1000, "max_consecutive_misses")]["verdict"] == CANNOT
    with pytest.raises(config.ConfigError, match="control-hz"):
        config.budgets_at(cfg, 0)


def _checks(**over) -> dict:
    """A machine with every check passing; `over` replaces whole checks."""
    base = {
        "scheduler": {"fifo": True, "mlockall": True, "root": False},
        "preemption": {"model": "rt", "uname_v": "#1 SMP PREEMPT_RT"},
        "isolation": {"cores": {1: {"isolated": True}}, "online_cpus": [0, 1, 2, 3]},
        "smt": {"siblings": {1: []}},
        "governor": {"status": "ok"},
        "idle": {"halting_states": False, "deepest_us": 0, "dma_latency": {"can_hold": True}},
        "virtualisation": {"virtual": False},
        "rt_throttling": {"status": "ok"},
    }
    base.update(over)
    return base


def test_a_tuned_machine_needs_no_fixes() -> None:
    assert fixes.suggest(_checks(), 1, [floor()]) == []


def test_fixes_name_the_kernel_parameters_and_limits() -> None:
    chk = _checks(
        scheduler={"fifo": False, "mlockall": False, "root": False},
        preemption={"model": "none", "uname_v": "#1 SMP PREEMPT_DYNAMIC"},
        isolation={"cores": {1: {"isolated": False}}, "online_cpus": [0, 1, 2, 3]},
        smt={"siblings": {1: [3]}},
        governor={"status": "warn"},
        idle={"halting_states": True, "deepest_us": 100, "dma_latency": {"can_hold": False}},
        virtualisation={"virtual": True},
    )
    text = "\n".join(fixes.suggest(chk, 1, [floor()], steal={1: 3.0}))
    for needle in (
        "rtprio 95",
        "memlock unlimited",
        "PREEMPT_RT",
        "preempt=full",
        "isolcpus=1,3 nohz_full=1,3 rcu_nocbs=1,3 irqaffinity=0,2",
        "nosmt",
        "performance",
        "cpu_dma_latency",
        "udev",
        "processor.max_cstate=1",
        "virtual machine",
        "steal time core 1 3.0%",
    ):
        assert needle in text, needle


def test_floor_better_under_load_suggests_holding_idle_latency() -> None:
    quiet, loaded = floor("quiet", p99=400), floor("loaded", p99=100)
    assert any("cpu_dma_latency" in f for f in fixes.suggest(_checks(), 1, [quiet, loaded]))
    assert not any("cpu_dma_latency" in f for f in fixes.suggest(_checks(), 1, [loaded]))
