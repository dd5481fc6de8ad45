"""The evaluation hooks of the simulation process: SceneReset on `scene_reset` re-places the
objects, SceneTruth on `scene_truth` acknowledges with where the objects and hands are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import zmq

from dualsys import config
from dualsys.bus import Publisher, SceneReset, SceneTruth, Subscriber
from dualsys.bus.limits import receive_spec
from dualsys.robot.scene_link import SCENE_TRUTH_HZ
from dualsys.scene import scene_of

CFG = config.load_robot("gr1")
SCENE = scene_of(CFG)


def _truth(sub: Subscriber, episode: int, timeout: float) -> SceneTruth | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sub.recv(200)
        if msg is not None and msg.episode == episode:
            return msg
    return None


def test_scene_reset_moves_objects_deterministically(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ctx = zmq.Context()
    env = dict(os.environ, MUJOCO_GL="egl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dualsys.cli", "sim", "--run-dir", str(run), "--no-rt"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        reset_ep, truth_ep = (CFG.endpoint(n, run) for n in ("scene_reset", "scene_truth"))
        deadline = time.monotonic() + 60
        while not Path(truth_ep.removeprefix("ipc://")).exists():
            assert time.monotonic() < deadline, "the simulation never bound scene_truth"
            time.sleep(0.1)
        pub = Publisher(ctx, reset_ep, "eval", bind=False)
        sub = Subscriber(ctx, truth_ep, (SceneTruth,), **receive_spec(CFG, "scene_truth"))
        seen: dict[int, SceneTruth] = {}
        for episode, seed in ((1, 7), (2, 8), (3, 7)):
            t0 = time.monotonic()
            while True:
                pub.send(SceneReset(seed=seed, episode=episode))
                if (got := _truth(sub, episode, 1.0)) is not None:
                    break
                assert time.monotonic() - t0 < 30, f"no SceneTruth for episode {episode}"
            seen[episode] = got
        cup = {e: m.named_objects()["cup"] for e, m in seen.items()}
        assert tuple(cup[1][:2]) != tuple(cup[2][:2])  # another seed, another placement
        assert abs(cup[1][0] - cup[3][0]) < 0.01 and abs(cup[1][1] - cup[3][1]) < 0.01
        assert 0.5 < cup[1][2] < 1.2  # on the table
        truth = seen[3]
        assert set(truth.named_objects()) == set(SCENE.object_names)
        assert set(truth.named_hands()) == set(SCENE.hand_sites)
        assert truth.sim_time > 0
        # then SCENE_TRUTH_HZ reports a second, in simulation-time order (a pushed object's path)
        times, end = [], time.monotonic() + 1.0
        while time.monotonic() < end:
            if (m := sub.recv(100)) is not None and m.episode == 3:
                times.append(m.sim_time)
        assert 0.6 * SCENE_TRUTH_HZ <= len(times) <= 1.5 * SCENE_TRUTH_HZ + 1, times
        assert all(b > a for a, b in zip(times, times[1:], strict=False)), times
        pub.close()
        sub.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        ctx.destroy(0)
