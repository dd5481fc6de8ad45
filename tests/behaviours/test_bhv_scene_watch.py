"""The live evaluation's receiver of the scene's ground truth (issue 20.4), on real ZeroMQ
sockets at the configured endpoints: every hostile SceneTruth the simulation's end could send
is dropped and counted, the receiver never raises and the link stays up, and a valid truth for
the episode then gives the object positions."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import zmq

from dualsys import config
from dualsys.behaviours.scene_watch import SceneWatch
from dualsys.bus import Publisher, SceneReset, Subscriber
from dualsys.scene import scene_of
from tests.bus.test_scene_truth import HOSTILE, truth

CFG = config.load_robot("gr1")
OBJECTS = scene_of(CFG).object_names


def _until(done, what: str, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, f"timed out: {what}"
        time.sleep(0.01)


def test_hostile_scene_truths_are_counted_and_the_watch_keeps_serving(tmp_path: Path) -> None:
    ctx = zmq.Context()
    # the simulation's end: binds both links (dualsys/robot/scene_link.py)
    sim_truth = Publisher(ctx, CFG.endpoint("scene_truth", tmp_path), "robot", bind=True)
    sim_reset = Subscriber(
        ctx, CFG.endpoint("scene_reset", tmp_path), (SceneReset,), bind=True, latest=False
    )
    watch = SceneWatch(ctx, CFG, tmp_path, OBJECTS)
    try:

        def reset_heard() -> bool:
            watch.reset(seed=5, episode=2)
            msg = sim_reset.recv(20)
            return msg is not None and (msg.seed, msg.episode) == (5, 2)

        _until(reset_heard, "SceneReset")
        _until(lambda: sim_truth.send(truth(episode=1)) and watch.truth(1) is not None, "warm-up")
        for case, (data, reason) in HOSTILE.items():
            before = watch.dropped[reason]

            def counted(data=data, reason=reason, before=before) -> bool:
                sim_truth.send_raw(data)
                assert watch.truth(3) is None
                return watch.dropped[reason] > before

            _until(counted, case)
        # well formed, but not the scene the scorer knows: ignored, counted
        ball = truth(object_names="cup,ball")
        _until(
            lambda: sim_truth.send(ball) and watch.truth(3) is None and watch.missing_objects,
            "missing objects",
        )
        # the truth of another episode is not an acknowledgement of this one
        later = truth(episode=4)
        _until(
            lambda: (
                sim_truth.send(later) and watch.truth(3) is None and watch.sub.last.episode == 4
            ),
            "another episode",
        )
        got: dict[str, np.ndarray] = {}

        def valid() -> bool:
            sim_truth.send(truth())
            got.update(watch.truth(3) or {})
            return bool(got)

        _until(valid, "a valid truth after the hostile ones")
        assert set(got) == set(OBJECTS)
        np.testing.assert_array_equal(got["cup"], [0.38, -0.16, 0.76])
        assert set(watch.dropped) == {r for _, r in HOSTILE.values()} | {"missing_objects"}
    finally:
        watch.close()
        sim_truth.close()
        sim_reset.close()
        ctx.destroy(0)


def test_follow_collects_the_episodes_truths_in_order(tmp_path: Path) -> None:
    """`follow` keeps every SceneTruth of the episode in order (a pushed object's path), and
    skips other episodes, truths missing an object and hostile frames (counted)."""
    ctx = zmq.Context()
    sim_truth = Publisher(ctx, CFG.endpoint("scene_truth", tmp_path), "robot", bind=True)
    watch = SceneWatch(ctx, CFG, tmp_path, OBJECTS)
    try:
        _until(lambda: sim_truth.send(truth(episode=1)) and watch.truth(1) is not None, "warm-up")
        while watch.sub.recv_nowait() is not None:
            pass
        data, reason = next(iter(HOSTILE.values()))
        before = watch.dropped[reason]
        for k in range(5):  # the cup pushed 1 cm along x per report
            objects = np.array([[0.38 + 0.01 * k, -0.16, 0.76], [0.4, 0.16, 0.75]])
            sim_truth.send(truth(sim_time=2.0 + 0.1 * k, objects=objects))
            sim_truth.send(truth(episode=9, sim_time=5.0))  # another episode's
            if k == 2:
                sim_truth.send_raw(data)
                sim_truth.send(truth(object_names="cup,ball"))
        got: list = []
        _until(lambda: watch.follow(3, got) or len(got) >= 5, "five truths")
        assert [round(t, 3) for t, _ in got] == [2.0, 2.1, 2.2, 2.3, 2.4]
        np.testing.assert_allclose([o["cup"][0] for _, o in got], [0.38, 0.39, 0.40, 0.41, 0.42])
        assert watch.dropped[reason] == before + 1 and watch.missing_objects >= 1
    finally:
        watch.close()
        sim_truth.close()
        ctx.destroy(0)


def test_objects_at_follows_the_reports_between_and_holds_beyond_them() -> None:
    from dualsys.behaviours.live_eval import objects_at

    at_reset = {"cup": np.array([0.0, 0.0, 0.7]), "box": np.array([1.0, 0.0, 0.7])}
    sim_t = np.array([0.5, 1.0, 1.25, 1.5, 3.0])
    # no report: the reset's positions throughout
    still = objects_at(sim_t, [], at_reset)
    np.testing.assert_array_equal(still["cup"], np.repeat(at_reset["cup"][None], 5, axis=0))
    pushed = {"cup": np.array([0.1, 0.0, 0.7]), "box": at_reset["box"]}
    reports = [
        (1.0, at_reset),
        (1.5, pushed),
        (1.5, {"cup": np.array([9.0, 9.0, 9.0]), "box": at_reset["box"]}),  # not later: skipped
        (1.2, {"cup": np.array([9.0, 9.0, 9.0]), "box": at_reset["box"]}),  # earlier: skipped
    ]
    got = objects_at(sim_t, reports, at_reset)
    np.testing.assert_allclose(got["cup"][:, 0], [0.0, 0.0, 0.05, 0.1, 0.1])
    np.testing.assert_allclose(got["box"], np.repeat(at_reset["box"][None], 5, axis=0))
