"""The floor benchmark's significance figure for a miss count above 1.5x the C loop's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from floor import excess_p  # noqa: E402


def run(misses: int, ticks: int = 80_000) -> dict:
    return {"misses": misses, "ticks": ticks}


def test_small_counts_above_the_ratio_are_within_noise():
    # 12 vs 7 of 19: a 60/40 split is what a true 1.5x gives; 12 or more comes up about half
    assert excess_p(run(12), run(7)) == pytest.approx(0.4878, abs=1e-4)


def test_a_clear_excess_is_significant():
    assert excess_p(run(101), run(25)) < 1e-5
    assert excess_p(run(40), run(0)) < 1e-8  # (1.5/2.5)^40


def test_p_is_one_without_dualsys_misses_and_follows_the_exposure():
    assert excess_p(run(0), run(9)) == pytest.approx(1.0)
    # twice the ticks for dualsys: the same counts are less surprising
    assert excess_p(run(12, 160_000), run(7)) > excess_p(run(12), run(7))
