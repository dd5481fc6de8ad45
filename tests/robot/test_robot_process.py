"""`dualsys sim` as a process: handshake, state and frames at their rates, commands, watchdog,
bad commands dropped, clean SIGTERM exit with the summary JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from dualsys.bus import CameraFrame, Command, Hello, Publisher, RobotState, Stats, Subscriber
from dualsys.bus.codec import encode

STATS_KEYS = {
    "realtime_factor",
    "physics_steps",
    "state_msgs",
    "frames",
    "render_ms_p50",
    "render_ms_p99",
    "watchdog_trips",
    "velocity_trips",
    "commands",
    "commands_refused",
    "mode",
}
SUMMARY_KEYS = {
    "realtime_factor",
    "physics_steps",
    "frames",
    "render_ms",
    "watchdog_trips",
    "velocity_trips",
    "commands",
    "commands_refused",
    "dropped",
    "cpus",
}


def _rate(msgs: list) -> float:
    """Messages per second from the senders' timestamps."""
    span = (msgs[-1].header.t_mono_ns - msgs[0].header.t_mono_ns) / 1e9
    return (len(msgs) - 1) / span


def _count(sub: Subscriber, seconds: float) -> list:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        msg = sub.recv(100)
        if msg is not None:
            out.append(msg)
    return out


@pytest.mark.slow
@pytest.mark.timing
def test_sim_process_end_to_end(cfg, tmp_path):
    ctx = zmq.Context()
    ep = lambda name: cfg.endpoint(name, tmp_path)  # noqa: E731
    stats = Subscriber(ctx, ep("stats"), (Hello, Stats), bind=True, latest=False)
    cmd = Publisher(ctx, ep("command"), source="control", bind=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dualsys.cli", "sim", "--run-dir", str(tmp_path)],
        env=dict(os.environ, DUALSYS_SUPERVISED="1"),
        stderr=subprocess.PIPE,
    )
    try:
        hello = stats.recv(60_000)
        while hello is not None and not isinstance(hello, Hello):
            hello = stats.recv(5_000)
        assert isinstance(hello, Hello), "no Hello from the robot process"
        assert (hello.role, hello.robot, hello.n_joints, hello.pid) == (
            "robot",
            "gr1",
            44,
            proc.pid,
        )
        states = Subscriber(ctx, ep("state"), (RobotState,), latest=False)
        frames = Subscriber(ctx, ep("camera"), (CameraFrame,), latest=False)
        time.sleep(0.3)  # let the subscriptions connect
        assert frames.recv(2000) is not None
        states.recv_latest(), frames.recv_latest()  # drain what queued up
        got = _count(states, 2.0)
        frame_msgs = _count(frames, 0.01)  # what arrived meanwhile
        state_hz, frame_hz = _rate(got), _rate(frame_msgs)
        assert 0.9 * cfg.rates.state_hz < state_hz < 1.1 * cfg.rates.state_hz, state_hz
        assert 0.7 * cfg.rates.camera_hz < frame_hz < 1.3 * cfg.rates.camera_hz, frame_hz
        assert len(got) > 100 and len(frame_msgs) >= 5  # enough samples for the rates
        img = frame_msgs[-1].image
        cam = cfg.cameras[0]
        assert img.shape == (cam.height, cam.width, 3) and img.std() > 10
        s = got[-1]
        assert s.q.shape == (44,) and np.isfinite(s.q).all() and s.mode == "hold"

        # a NaN command (dropped by the bus) and an out-of-limit one (refused by safety)
        bad = cfg.limits()["default"].copy()
        bad[0] = np.nan
        cmd.send_raw(encode(Command(q=bad, dq=np.zeros(44), mode="run"), 1, "control"))
        time.sleep(0.05)
        bad[0] = 9.0
        cmd.send(Command(q=bad, dq=np.zeros(44), mode="run"))
        time.sleep(0.05)
        target = cfg.limits()["default"].copy()
        j = cfg.joint_names.index("left_elbow_pitch_joint")
        target[j] = -0.9
        # soft start 1.5 s; a starved client can trip the watchdog (-> new ramp), so allow more
        end, moved = time.monotonic() + 15.0, None
        while time.monotonic() < end and not (moved and abs(moved.q[j] - target[j]) < 0.05):
            cmd.send(Command(q=target, dq=np.zeros(44), mode="run"))
            time.sleep(0.005)
            moved = states.recv_latest() or moved
        assert abs(moved.q[j] - target[j]) < 0.05 and moved.mode == "run"
        # silence: the watchdog trips and holds (exactly-once counting per episode is checked
        # offline in test_robot_safety; here a starved client may cause extra episodes)
        last, end = None, time.monotonic() + 10
        while time.monotonic() < end and not (last and last["watchdog_trips"] >= 1):
            msg = stats.recv(500)
            if isinstance(msg, Stats):
                last = msg.values
        assert last is not None and set(last) >= STATS_KEYS
        assert last["watchdog_trips"] >= 1
        assert last["commands"] > 20 and last["commands_refused"] == 2
        time.sleep(0.1)
        assert states.recv_latest().mode == "hold"
        proc.send_signal(signal.SIGINT)  # supervised: ignored
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        for sock in (stats, cmd):
            sock.close()
        ctx.destroy(0)
    summary = json.loads((tmp_path / "robot.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["dropped"] == {"nonfinite": 1}
    assert summary["refused"] == {"out_of_limits": 1}
    assert summary["watchdog_trips"] >= 1 and summary["velocity_trips"] == 0
    assert summary["realtime_factor"] > 0.9 and summary["frames"] > 20
    assert summary["cpus"] == [cfg.cores.robot]
