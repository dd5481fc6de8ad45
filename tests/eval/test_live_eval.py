"""The shipped brain, live: a short `dualsys eval` through real processes and sockets.

Fails when the trained policy + fusion head stop doing the two most reliable behaviours (or
when the live pipeline — supervisor, scene reset, say, recording, scoring — breaks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dualsys import config
from dualsys.behaviours.live_eval import run_live_eval, summarise
from dualsys.behaviours.phrasings import load_phrasings
from dualsys.replay import read_mcap
from dualsys.tasks import task_pack
from dualsys.tasks.gr1_table.scoring import TOUCH_HOLD_S, TOUCH_RADIUS
from dualsys.testing.extras import ensure_extra

pytestmark = [pytest.mark.slow]
CFG = config.load_robot("gr1")
# two behaviours the shipped weights do reliably, one that needs the camera (their live
# rates: benchmarks/results/behaviours.md); 1 of 2 episodes each keeps chance failures rare
BEHAVIOURS = ("touch_blue_box", "bring_hands_together")
#: behaviours judged by their reach only: the shipped weights reach the box reliably, but the
#: touch does not yet stay until the instruction changes in every episode (the scorer's
#: stay_share; issue 20 point 7, measured in benchmarks/results/behaviours.md)
REACH_ONLY = {"touch_blue_box"}
#: behaviours whose motion keeps every joint inside its velocity limits: the robot's velocity
#: monitor (`robot.safety`) never trips during them, so a trip there is a fault (the palms
#: meeting in bring_hands_together can trip it when the hands collide)
NO_TRIPS = ("touch_blue_box", "return_to_rest")


@pytest.mark.skipif(
    CFG.policy.checkpoint is None or CFG.system2.checkpoint is None,
    reason="robots/gr1.toml ships no trained checkpoints",
)
def test_trained_brain_does_two_behaviours_live(tmp_path: Path) -> None:
    trained = load_phrasings(
        CFG.path.parent / "gr1" / "phrasings_train.toml", task_pack(CFG).behaviours
    )
    phrasings = {b: trained[b] for b in (*BEHAVIOURS, "return_to_rest")}
    mcap = tmp_path / "eval.mcap"
    results, codes, sup = run_live_eval(
        CFG, tmp_path / "run", phrasings, episodes=2, seed=7, record=mcap
    )
    summary = summarise(results)
    assert set(codes.values()) == {0}, codes
    # `dualsys eval --record`: the bus of the whole evaluation, every instruction said in it
    rec = read_mcap(mcap)
    assert rec.topics.get("chunk") and rec.topics.get("state"), sorted(rec.topics)
    said = {r.msg.instruction for r in rec.topics["latent"]}
    assert {r.phrasing for r in results} <= said, said
    _export_recording(mcap, tmp_path / "lerobot", {r.phrasing for r in results})
    # a rest episode starts from another behaviour's pose (LEAD_IN), so the robot has a way
    # back to make: its switch is measurable (from rest it would not be)
    rest = [r for r in results if r.behaviour == "return_to_rest"]
    assert len(rest) == 2 and all(np.isfinite(r.switch_latency_s) for r in rest), rest
    # and it gets there (System 1 settles after the switch, `policy.switch_settle_ms`)
    assert summary["behaviours"]["return_to_rest"]["success_rate"] >= 0.5, rest
    for b in BEHAVIOURS:
        assert summary["behaviours"][b]["episodes"] == 2
        if b in REACH_ONLY:
            reached = [
                r.values["min_dist"] <= TOUCH_RADIUS and r.values["hold_s"] >= TOUCH_HOLD_S
                for r in results
                if r.behaviour == b
            ]
            assert sum(reached) >= 1, [r.values for r in results if r.behaviour == b]
        else:
            assert summary["behaviours"][b]["success_rate"] >= 0.5, summary["behaviours"][b]
    # every episode reports the robot's velocity-monitor trips; each one held the robot
    trips = {(r.behaviour, r.phrasing, r.seed): r.values["velocity_trips"] for r in results}
    assert all(n == 0 for (b, _, _), n in trips.items() if b in NO_TRIPS), trips
    assert sum(trips.values()) <= len(results), trips  # at most one hold per episode on average
    latencies = [r.switch_latency_s for r in results if np.isfinite(r.switch_latency_s)]
    assert latencies and min(latencies) < 2.0


def _export_recording(mcap: Path, out: Path, phrasings: set[str]) -> None:
    """`dualsys export` of the evaluation's recording: an episode per instruction said, each a
    dataset `dualsys train` reads back."""
    from dualsys.behaviours.dataset import DatasetReader
    from dualsys.cli import main
    from dualsys.export import have_av

    ensure_extra("export", have_av, "PyAV")
    assert main(["export", "--format", "lerobot", str(mcap), str(out)]) == 0
    reader = DatasetReader(out)
    tasks = {e["instruction"] for e in reader.episodes}
    assert phrasings <= tasks, (phrasings, tasks)
    for i in range(len(reader)):
        ep = reader.load(i)
        assert len(ep) >= CFG.rates.action_hz and len(ep.images) >= 1  # at least 1 s
        assert np.all(np.isfinite(ep.q)) and np.all(np.isfinite(ep.action))
