"""The evaluation hook of the simulation process: SceneReset re-places objects, acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import zmq

from dualsys import config
from dualsys.bus import Publisher, SceneReset, Stats, Subscriber

CFG = config.load_robot("gr1")


def _scene(stats: Subscriber, episode: int, timeout: float = 20.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = stats.recv(200)
        if msg is not None and msg.process == "scene" and msg.values["episode"] == episode:
            return msg.values
    raise AssertionError(f"no scene acknowledgement for episode {episode}")


def test_scene_reset_moves_objects_deterministically(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ctx = zmq.Context()
    stats = Subscriber(ctx, CFG.endpoint("stats", run), (Stats,), bind=True, latest=False)
    env = dict(os.environ, MUJOCO_GL="egl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dualsys.cli", "sim", "--run-dir", str(run), "--no-rt"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / "scene.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        pub = Publisher(ctx, f"ipc://{run}/scene.sock", "eval", bind=False)
        seen = {}
        for episode, seed in ((1, 7), (2, 8), (3, 7)):
            t0 = time.monotonic()
            while True:
                pub.send(SceneReset(seed=seed, episode=episode))
                try:
                    seen[episode] = _scene(stats, episode, timeout=1.0)
                    break
                except AssertionError:
                    assert time.monotonic() - t0 < 30
        cup = {e: (v["cup.x"], v["cup.y"]) for e, v in seen.items()}
        assert cup[1] != cup[2]  # another seed, another placement
        assert abs(cup[1][0] - cup[3][0]) < 0.01 and abs(cup[1][1] - cup[3][1]) < 0.01
        assert 0.5 < seen[1]["cup.z"] < 1.2  # on the table
        pub.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        stats.close()
        ctx.destroy(0)
