"""Parsers of the /proc, /sys and cyclictest texts the doctor reads, fed with sample texts."""

from __future__ import annotations

import pytest

from dualsys.doctor import parse


def test_cpu_list_ranges_and_isolcpus_flags() -> None:
    assert parse.parse_cpu_list("0-2,5\n") == [0, 1, 2, 5]
    assert parse.parse_cpu_list("domain,managed_irq,1-3") == [1, 2, 3]
    assert parse.parse_cpu_list("") == []


def test_cmdline_keeps_latency_keys_and_stops_at_init_args() -> None:
    text = (
        "BOOT_IMAGE=/vmlinuz root=/dev/sda1 isolcpus=1 nohz_full=1 rcu_nocbs=1 "
        "intel_idle.max_cstate=0 preempt=full quiet -- isolcpus=7"
    )
    assert parse.parse_cmdline(text) == {
        "isolcpus": "1",
        "nohz_full": "1",
        "rcu_nocbs": "1",
        "intel_idle.max_cstate": "0",
        "preempt": "full",
    }


CONFIG_DYNAMIC_NONE = """CONFIG_PREEMPT_BUILD=y
CONFIG_PREEMPT_NONE=y
# CONFIG_PREEMPT_VOLUNTARY is not set
# CONFIG_PREEMPT is not set
CONFIG_PREEMPT_COUNT=y
CONFIG_PREEMPTION=y
CONFIG_PREEMPT_DYNAMIC=y
"""


@pytest.mark.parametrize(
    ("uname_v", "realtime", "debug", "config", "cmdline", "model"),
    [
        ("#1 SMP PREEMPT_RT Fri", "", "", "", "", "rt"),
        ("#1 SMP PREEMPT_DYNAMIC", "1", "", "", "", "rt"),
        ("#1 SMP PREEMPT_DYNAMIC", "", "none voluntary (full) lazy", "", "", "full"),
        ("#1 SMP PREEMPT_DYNAMIC", "", "", CONFIG_DYNAMIC_NONE, "", "none"),
        ("#1 SMP PREEMPT_DYNAMIC", "", "", CONFIG_DYNAMIC_NONE, "preempt=voluntary", "voluntary"),
        ("#1 SMP PREEMPT_DYNAMIC", "", "", "", "", "dynamic (mode unknown)"),
        ("#1 SMP PREEMPT Tue", "", "", "", "", "full"),
        ("#1 SMP Tue", "", "", "", "", "unknown"),
    ],
)
def test_preempt_model(uname_v, realtime, debug, config, cmdline, model) -> None:
    assert parse.preempt_model(uname_v, realtime, debug, config, cmdline)[0] == model


def test_proc_stat_steal_delta() -> None:
    before = parse.parse_proc_stat(
        "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 38 0 0 0 2 0 0\n"
    )
    after = parse.parse_proc_stat(
        "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 55 0 5 90 0 0 0 0 0 0\ncpu1 45 0 5 78 0 0 0 22 0 0\n"
    )
    assert before[1] == (50, 2)
    # cpu1: 100 jiffies passed, 20 of them stolen by the host
    assert parse.steal_percent(before, after) == {0: 0.0, 1: 20.0}


def test_cap_eff_bits() -> None:
    status = "Name:\tpython\nCapEff:\t0000000000804000\n"
    caps = parse.parse_cap_eff(status)
    assert caps >> parse.CAP_SYS_NICE & 1 and caps >> parse.CAP_IPC_LOCK & 1
    assert parse.parse_cap_eff("CapEff:\t0000000000000000\n") == 0


CYCLICTEST = """# /dev/cpu_dma_latency set to 0us
000000 000000
000001 000050
000002 000930
000003 000014
000004 000000
000007 000003
000008 000001
006000 000002
# Total: 000001000
# Min Latencies: 00001
# Avg Latencies: 00002
# Max Latencies: 06210
# Histogram Overflows: 00000
"""


def test_cyclictest_histogram() -> None:
    r = parse.parse_cyclictest(CYCLICTEST, hz=200)
    assert r["ticks"] == 1000
    assert (r["p50_us"], r["p99_us"], r["max_us"]) == (2, 3, 6210)
    assert r["misses"] == 2 and r["late_half"] == 2  # the two 6 ms wake-ups, period 5 ms
    assert r["max_streak"] is None  # a histogram does not say which ticks were in a row
    with pytest.raises(ValueError, match="no histogram"):
        parse.parse_cyclictest("# Max Latencies: 00012\n", hz=200)


def test_task_stat_policy_priority_and_cpu() -> None:
    # comm with a space and a parenthesis; fields after it as the kernel writes them
    tail = " ".join(["S"] + ["0"] * 35 + ["1", "80", "1"] + ["0"] * 10)
    t = parse.parse_task_stat(f"4242 (dualsys (ctl) x) {tail}")
    assert t == {"comm": "dualsys (ctl) x", "cpu": 1, "rt_priority": 80, "policy": "SCHED_FIFO"}
    assert parse.parse_task_stat("4242 (short) S 1 2") is None
