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
