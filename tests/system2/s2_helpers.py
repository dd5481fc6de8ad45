"""Helpers for the System 2 tests: a real ZeroMQ feeder standing in for the robot (state at
200 Hz, camera frames at 10 Hz), a stats listener standing in for the supervisor, and a way to
start `dualsys system2` as its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from dualsys.bus import CameraFrame, Hello, Publisher, RobotState, Stats, Subscriber
from dualsys.config import RobotConfig

REPO = Path(__file__).resolve().parents[2]


class Feeder:
    """Publishes RobotState (state_hz) and CameraFrame (camera_hz) on the run dir's endpoints,
    as the robot would (it binds both). `image` / `q` can be swapped while running."""

    def __init__(self, cfg: RobotConfig, run_dir: Path, seed: int = 0) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.ctx = zmq.Context()
        self.state_pub = Publisher(self.ctx, cfg.endpoint("state", run_dir), "robot")
        self.camera_pub = Publisher(self.ctx, cfg.endpoint("camera", run_dir), "robot")
        cam = cfg.cameras[0]
        rng = np.random.default_rng(seed)
        self.image = rng.integers(0, 256, (cam.height, cam.width, 3), dtype=np.uint8)
        self.q = cfg.limits()["default"].copy()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def _run(self) -> None:
        r = self.cfg.rates
        n = self.cfg.n_joints
        state_dt, cam_every = 1.0 / r.state_hz, max(1, r.state_hz // r.camera_hz)
        t, i = time.monotonic(), 0
        while not self._stop.is_set():
            if self._paused.is_set():
                time.sleep(0.005)
                t, i = time.monotonic(), 0
                continue
            self.state_pub.send(RobotState(q=self.q, dq=np.zeros(n), tau=np.zeros(n)))
            if i % cam_every == 0:
                self.camera_pub.send(CameraFrame(camera=self.cfg.cameras[0].name, image=self.image))
            i += 1
            t += state_dt
            time.sleep(max(0.0, t - time.monotonic()))

    def pause(self) -> None:
        """Stop publishing (so injected bad messages are not overwritten by CONFLATE)."""
        self._paused.set()
        time.sleep(0.02)

    def resume(self) -> None:
        self._paused.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.state_pub.close()
        self.camera_pub.close()
        self.ctx.destroy(linger=0)


class StatsListener:
    """Binds the stats endpoint (as the supervisor does) and collects Hello and Stats."""

    def __init__(self, ctx: zmq.Context, cfg: RobotConfig, run_dir: Path) -> None:
        self.sub = Subscriber(
            ctx, cfg.endpoint("stats", run_dir), (Hello, Stats), bind=True, latest=False
        )
        self.hellos: list[Hello] = []
        self.stats: list[Stats] = []

    def poll(self, timeout_ms: int = 0) -> None:
        while (msg := self.sub.recv(timeout_ms)) is not None:
            (self.hellos if isinstance(msg, Hello) else self.stats).append(msg)
            timeout_ms = 0

    def wait_hello(self, timeout_s: float) -> Hello | None:
        deadline = time.monotonic() + timeout_s
        while not self.hellos and time.monotonic() < deadline:
            self.poll(100)
        return self.hellos[0] if self.hellos else None


def start_system2(run_dir: Path, *args: str) -> subprocess.Popen:
    """`dualsys system2 --run-dir RUN_DIR ARGS...` as its own process (output captured)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "dualsys.cli", "system2", "--run-dir", str(run_dir), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
