"""`dualsys eval` prints its switch latency in plain numbers: not 17 digits, not
`np.float64(...)`, and a dash where no episode measured one (issue 20 point 7)."""

from __future__ import annotations

import numpy as np

from dualsys.commands.eval import switch_line


def test_switch_latency_prints_plain_seconds():
    line = switch_line({"p50": np.float64(0.12046499050000001), "p99": 0.3121356440099997})
    assert line == "switch latency p50 0.12 s, p99 0.31 s"


def test_no_measured_switch_prints_a_dash_not_nan_or_none():
    assert switch_line({"p50": None, "p99": float("nan")}) == "switch latency p50 -, p99 -"
    assert switch_line({}) == "switch latency p50 -, p99 -"


def test_broken_budgets_print_plain_values_and_limits():
    from dualsys.report import budget_line

    budget = {
        "ok": False,
        "checks": {
            "miss_rate": {"value": 0.00021227034304004648, "limit": 0.002, "ok": True},
            "max_consecutive_misses": {"value": 7, "limit": 5, "ok": False},
            "control_rate_hz": {
                "value": np.float64(197.23456789),
                "limit": [198.0, 202.0],
                "ok": False,
            },
        },
    }
    line = budget_line(budget)
    assert line == (
        "BROKEN: max_consecutive_misses 7 (limit 5); control_rate_hz 197.2 (limit 198..202)"
    )
    assert budget_line({"ok": True, "checks": {}}) == "all held"
    assert budget_line({"ok": False, "checks": {}}) == "BROKEN: no data"
