"""Issue 17's "done when": one live `dualsys up` survives every hostile class in one run with
its timing budgets held (the bounded CI form of benchmarks/hostile.py, same functions).

One real `dualsys up --untrained --headless`, `dualsys status` attached throughout; then
`dualsys say` texts, malformed frames of every class on System 2's instruction link and the
supervisor's stats link, Instructions System 2 must refuse, rogue Hello/Stats, random sources,
a short flood, a second `dualsys up`; then Ctrl-C. Every class must get its outcome (counted
drops under the reason the link's own decoder gives, refusals with their exit code and reason),
`up` must exit 0 with no command refused by the robot, and the miss budget holds (judged
against the machine's floor on System 1's core).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualsys import config
from dualsys.testing import hostile as live
from dualsys.testing.floor import FloorBeside, judge_misses

pytestmark = [pytest.mark.slow, pytest.mark.timing]
CFG = config.load_robot("gr1")
PAUSE_S = 1.0


def _say_cases() -> list[tuple[str, str, int]]:
    cases = live.say_cases(CFG)
    keep = ("rich markup closing tag", "ANSI escape", "one over the limit")
    return [c for c in cases if c[0].startswith(keep)]


def test_one_live_up_survives_every_hostile_class(tmp_path: Path) -> None:
    with FloorBeside(CFG) as beside:  # the machine's floor for as long as the run lasts
        up = live.LiveUp(tmp_path, untrained=True)
        results: list[live.ClassResult] = []
        status = live.start_status(up)
        try:
            results.append(live.run_say(up, CFG, PAUSE_S, _say_cases()))
            results += live.run_raw(up, CFG, 12, PAUSE_S)
            results.append(live.run_peer_instructions(up, CFG, 2, PAUSE_S))
            results.append(live.run_rogue_hello(up, CFG, 5, PAUSE_S))
            results.append(live.run_random_sources(up, CFG, 400, PAUSE_S))
            results.append(live.run_flood(up, CFG, 1.5, PAUSE_S))
            results.append(live.run_second_up(up, PAUSE_S))
            results.append(live.stop_status(status, up, 0.0))
        finally:
            if status.poll() is None:
                status.kill()
            code = up.stop()
            floors = [beside.stop()]
    assert code == 0, "".join(up.lines[-30:])
    report = json.loads(up.report.read_text())
    counted = live.judge_report(results, report)
    failed = {r.name: (dict(r.outcome), r.note) for r in results if not r.ok}
    assert not failed, failed
    # every class was counted under the reason the receiving link's own decoder gives
    for link, rows in counted.items():
        for why, (got, want) in rows.items():
            assert got >= want, (link, why, got, want)
    assert counted["instruction"]["too_long"][0] >= 2  # the peer's over-long text, refused
    assert counted["untrusted"]["wrong_pid"][0] >= 60
    # nothing hostile reached the robot, and the run stopped cleanly
    assert report["robot"]["commands_refused"] == 0, report["robot"]
    assert report["clean_exit"], report["reason"]
    assert all(v == 0 for v in report["restarts"].values()), report["restarts"]
    s1 = report["system1"]
    ok, why = judge_misses(s1["deadline_misses"], s1["ticks"], CFG.budgets.miss_rate, floors)
    assert ok, why
    # a streak over budget only where the machine itself stalled that long (floor probe)
    streak_us = CFG.budgets.max_consecutive_misses * 1e6 / CFG.rates.control_hz
    streak_ok = s1["max_consecutive_misses"] <= CFG.budgets.max_consecutive_misses
    assert streak_ok or any(f.max_us > streak_us for f in floors), (s1, floors)
