"""The control loop's floor helpers: idle-latency hold, derived spin margin, miss causes."""

from __future__ import annotations

import os
import struct

import pytest

from dualsys.system1 import floor
from dualsys.system1.floor import (
    CAUSES,
    IdleLatency,
    MissAttribution,
    calibrate_margin,
    margin_cap_ns,
)


def _dma_value() -> int:
    with open(floor.DMA_LATENCY, "rb") as f:
        return struct.unpack("<i", f.read(4))[0]


@pytest.mark.skipif(
    not os.access(floor.DMA_LATENCY, os.W_OK), reason="needs write access to cpu_dma_latency"
)
def test_idle_latency_held_then_released():
    before = _dma_value()
    hold = IdleLatency()
    assert hold.hold(0) == ""
    assert hold.held and _dma_value() == 0
    hold.release()
    assert not hold.held and _dma_value() == before


def test_idle_latency_refusal_is_a_note(monkeypatch):
    monkeypatch.setattr(floor, "DMA_LATENCY", "/nonexistent/cpu_dma_latency")
    hold = IdleLatency()
    note = hold.hold(0)
    assert "not held" in note and not hold.held
    hold.release()  # harmless


def test_margin_capped_by_share_of_period():
    # 1 kHz with the gr1 default of 1000 us: the cap is 20% of the period, not the whole period
    assert margin_cap_ns(1_000_000, 1_000_000) == 200_000
    assert margin_cap_ns(5_000_000, 1_000_000) == 1_000_000
    assert margin_cap_ns(5_000_000, 300_000) == 300_000


def test_calibrated_margin_within_bounds():
    cap = margin_cap_ns(2_000_000, 1_000_000)
    margin, info = calibrate_margin(2_000_000, cap, samples=30)
    assert floor.MIN_MARGIN_NS <= margin <= cap
    assert info["margin_us"] == margin // 1000 and info["oversleep_p50_us"] >= 0


def test_parsers():
    stat = "cpu  1 2 3 4 5 6 7 99 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\ncpu1 1 2 3 4 5 6 7 42 0 0\n"
    assert floor._steal_ticks(stat, 1) == 42
    assert floor._steal_ticks(stat, -1) == 99
    assert floor._steal_ticks(stat, 7) == -1
    assert floor._run_delay_ns("123 456 7\n") == 456
    assert floor._run_delay_ns("") == -1


def test_attribution_causes():
    a = MissAttribution(0)
    period = 5_000_000
    # no run-queue delay or steal since the baseline: late wake vs overrun by lateness
    a.baseline()
    a.steal0 = 10**12  # steal can only grow; a huge baseline means "no steal seen"
    assert CAUSES[a.attribute(4_000_000, period)] == "woke_late"
    a.baseline()
    a.steal0 = 10**12
    assert CAUSES[a.attribute(10_000, period)] == "overran"
    # the thread's run-queue delay grew by more than PREEMPT_NS: another task held the core
    a.baseline()
    a.delay0 -= 2 * floor.PREEMPT_NS
    assert CAUSES[a.attribute(10_000, period, n=3)] == "preempted"
    # steal time grew: the host took the vCPU
    a.baseline()
    if a.steal0 >= 1:
        a.steal0 -= 1
        assert CAUSES[a.attribute(10_000, period)] == "host"
    counts = a.as_dict()
    assert counts["preempted"] == 3 and counts["woke_late"] == 1 and counts["overran"] == 1
    a.close()
