"""The bridge driver across processes: an external driver process speaks RobotState/Command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from dualsys.bus import Command, Publisher, RobotState, Subscriber
from dualsys.robot.bridge import BridgeRobot
from dualsys.robot.interface import RUN

PEER = [sys.executable, "-m", "dualsys.testing.robots", "--robot", "gr1"]


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.slow
def test_bridge_driver_across_two_processes(cfg, tmp_path):
    peer = subprocess.Popen([*PEER, "--run-dir", str(tmp_path)], stderr=subprocess.PIPE)
    robot = BridgeRobot(cfg, run_dir=tmp_path, connect_timeout_s=20)
    try:
        robot.configure()
        robot.activate()
        q0 = robot.read_state().q.copy()
        assert np.allclose(q0, cfg.limits()["default"])
        target = q0.copy()
        target[cfg.joint_names.index("left_elbow_pitch_joint")] = -0.9
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            robot.write_command(target, np.zeros(cfg.n_joints), RUN)
            time.sleep(0.005)
            if np.allclose(robot.read_state().q, target):
                break
        assert np.allclose(robot.read_state().q, target), "peer did not follow the commands"
        assert robot.state_age_s < 0.1
        robot.deactivate()
    finally:
        assert _stop(peer) == 0
    assert "commands" in peer.stderr.read().decode()


@pytest.mark.slow
def test_robot_process_with_bridge_driver(cfg, tmp_path):
    """dualsys sim --driver bridge: bus commands pass robot safety and reach the peer."""
    env = dict(os.environ, DUALSYS_RUN_DIR=str(tmp_path))
    peer = subprocess.Popen([*PEER, "--run-dir", str(tmp_path)])
    sim = subprocess.Popen(
        [sys.executable, "-m", "dualsys.cli", "sim", "--driver", "bridge", "--no-rt"],
        env=env,
    )
    ctx = zmq.Context()
    state = Subscriber(ctx, cfg.endpoint("state", tmp_path), (RobotState,), latest=True)
    cmd = Publisher(ctx, cfg.endpoint("command", tmp_path), source="control", bind=True)
    try:
        assert state.recv(20_000) is not None
        target = cfg.limits()["default"].copy()
        j = cfg.joint_names.index("right_elbow_pitch_joint")
        target[j] = -0.8
        seen = []
        t_end = time.monotonic() + 15  # soft start is 1.5 s; generous for a loaded machine
        while time.monotonic() < t_end and not (seen and abs(seen[-1] - target[j]) < 1e-6):
            cmd.send(Command(q=target, dq=np.zeros(cfg.n_joints), mode="run"))
            msg = state.recv(50)
            if msg is not None:
                seen.append(msg.q[j])
        assert abs(seen[-1] - target[j]) < 1e-6
        steps = np.diff(seen)
        assert np.abs(steps).max() < 0.05 and len(seen) > 100  # ramped over many ticks, no jump
    finally:
        rc_sim, rc_peer = _stop(sim), _stop(peer)
        state.close()
        cmd.close()
        ctx.term()
    assert rc_sim == 0 and rc_peer == 0
