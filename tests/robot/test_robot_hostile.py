"""The robot side never trusts a stale or jumping stream (issue 17, point 6), and a normal
start and stop trip no watchdog (point 8).

The closed-loop tests drive the real MuJoCo simulation through the safety filter at the robot
loop's 5 ms tick; the bridge test runs the real robot process (`dualsys sim --driver bridge`)
against a BridgePeer over real sockets.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from dualsys.bus import Command, Publisher, RobotState, Subscriber
from dualsys.robot.bridge import BridgePeer, bridge_endpoints
from dualsys.robot.interface import HOLD, RUN
from dualsys.robot.safety import RobotSafety, SafetySettings

DT = 0.005


def _tick(sim, safety, t, cmd=None, mode="run", stale=False):
    """One robot tick: offer cmd (if any), update, apply, step. Returns (target, mode, ok)."""
    ok = safety.offer(t, cmd, None, mode) if cmd is not None else None
    s = sim.read_state()
    q, dq, m = safety.update(t, s.q, s.dq, stale=True) if stale else safety.update(t, s.q, s.dq)
    sim.write_command(q, dq, m)
    sim.advance(DT)
    return q.copy(), m, ok


def _follow(sim, safety, t, cmd, seconds):
    for _ in range(round(seconds / DT)):
        _tick(sim, safety, t, cmd)
        t += DT
    return t


def _setup(cfg, sim, **overrides):
    sim.reset()
    safety = RobotSafety(cfg, SafetySettings.from_config(cfg, soft_start_s=0.2, **overrides))
    safety.reset(0.0, sim.read_state().q)
    return safety


def test_jump_beyond_velocity_limit_refused_and_held(cfg, sim):
    safety = _setup(cfg, sim)
    q0 = cfg.limits()["default"].copy()
    j = cfg.joint_names.index("left_elbow_pitch_joint")
    vmax = cfg.limits()["velocity"][j]
    t = _follow(sim, safety, 0.0, q0, 0.5)  # ramped in, following
    cmd = q0.copy()
    for _ in range(20):  # a stream at 0.9 x the velocity limit is accepted
        cmd[j] -= 0.9 * vmax * DT
        assert _tick(sim, safety, t, cmd)[2] is True
        t += DT
    cmd[j] -= 2.0 * 0.9 * vmax * DT  # one command skipped (conflated): still accepted
    assert _tick(sim, safety, t, cmd)[2] is True
    t += DT
    held = sim.read_state().q.copy()
    jump = cmd.copy()
    jump[j] -= 0.5  # 0.5 rad in one 5 ms tick: far beyond the velocity limit
    target, mode, ok = _tick(sim, safety, t, jump)
    t += DT
    assert ok is False and safety.refused["jump"] == 1
    assert mode == HOLD and np.abs(target - held).max() < 0.02  # holds where it is, no jump
    # the stream goes on from the jumped value: accepted again, re-entered by ramp
    targets = []
    for _ in range(round(0.3 / DT)):
        targets.append(_tick(sim, safety, t, jump)[0])
        t += DT
    targets = np.array(targets)
    assert np.abs(targets[0] - target).max() < 0.02  # the ramp starts at the held pose
    assert np.abs(np.diff(targets[:, j])).max() < 0.05  # ... and moves smoothly
    assert np.allclose(targets[-1], jump) and safety.refused["jump"] == 1


def test_reentry_after_commanded_hold_ramps_from_held_pose(cfg, sim):
    safety = _setup(cfg, sim)
    q0 = cfg.limits()["default"].copy()
    t = _follow(sim, safety, 0.0, q0, 0.5)
    for _ in range(20):  # a commanded hold
        _, mode, _ = _tick(sim, safety, t, q0, "hold")
        t += DT
    assert mode == HOLD
    held = safety.q_out.copy()
    far = q0.copy()
    far[cfg.joint_names.index("right_shoulder_pitch_joint")] = -1.0
    targets = []
    for _ in range(round(0.3 / DT)):  # "run" again, towards a far pose
        targets.append(_tick(sim, safety, t, far)[0])
        t += DT
    targets = np.array(targets)
    assert np.abs(targets[0] - held).max() < 1e-3, "hold -> follow jumped to the command"
    assert np.abs(np.diff(targets, axis=0)).max() < 0.05
    assert np.allclose(targets[-1], far)


def test_silence_in_commanded_hold_is_no_trip_but_a_gap_while_following_is(cfg, sim):
    safety = _setup(cfg, sim)
    q0 = cfg.limits()["default"].copy()
    # the control loop's warm-up burst: "hold" commands, then a pause before the loop runs
    t = 0.0
    for _ in range(30):
        _tick(sim, safety, t, q0, "hold")
        t += DT
    for _ in range(round(0.4 / DT)):
        _tick(sim, safety, t)
        t += DT
    t = _follow(sim, safety, t, q0, 1.0)  # the run
    for _ in range(50):  # the stop ramp ends in "hold", then the stream ends
        _tick(sim, safety, t, q0, "hold")
        t += DT
    for _ in range(round(0.5 / DT)):
        _, mode, _ = _tick(sim, safety, t)
        t += DT
    assert mode == HOLD and safety.watchdog_trips == 0, safety.summary()
    # a deliberate 200 ms gap while following still trips the watchdog, on time
    t = _follow(sim, safety, t, q0, 0.5)
    last = t - DT
    modes = []
    for _ in range(round(0.2 / DT)):
        modes.append(_tick(sim, safety, t)[1])
        t += DT
    first_hold = last + DT * (1 + modes.index(HOLD))
    assert safety.watchdog_trips == 1
    assert first_hold - last <= cfg.budgets.command_timeout_ms / 1000 + 2 * DT


def test_stale_state_holds_ignores_commands_and_reenters_by_ramp(cfg, sim):
    safety = _setup(cfg, sim)
    q0 = cfg.limits()["default"].copy()
    t = _follow(sim, safety, 0.0, q0, 0.5)
    far = q0.copy()
    far[cfg.joint_names.index("left_shoulder_pitch_joint")] = -1.0
    held = sim.read_state().q.copy()
    for _ in range(40):  # state stale: commands (even valid ones) are not followed
        target, mode, _ = _tick(sim, safety, t, far, stale=True)
        t += DT
        assert mode == HOLD and np.abs(target - held).max() < 0.01
    assert safety.stale_trips == 1 and safety.watchdog_trips == 0
    first, mode, _ = _tick(sim, safety, t, far)  # states flow again: ramp from the held pose
    assert mode == RUN and np.abs(first - held).max() < 0.01


def _peer_loop(cfg, run_dir, publishing, stop, log):
    """A vendor process in a thread: an ideal robot publishing state at 200 Hz while
    `publishing` is set; it logs every command it receives as (time, mode, q)."""
    ctx = zmq.Context()
    peer = BridgePeer(ctx, cfg.n_joints, *bridge_endpoints(run_dir))
    q = cfg.limits()["default"].copy()
    zero = np.zeros(cfg.n_joints)
    t = 0.0
    while not stop.is_set():
        cmd = peer.command()
        if cmd is not None:
            log.append((time.monotonic(), cmd.mode, cmd.q.copy()))
            if cmd.mode != "damp":
                q[:] = cmd.q
        if publishing.is_set():
            peer.publish(q, zero, zero, t, "run")
        t += DT
        time.sleep(DT)
    peer.close()
    ctx.term()


@pytest.mark.slow
def test_bridge_peer_silence_holds_and_stops_state(cfg, tmp_path):
    """The vendor process stops publishing: within the command timeout the robot side holds,
    and its RobotState stops (no frozen state under fresh timestamps); then it resumes by ramp."""
    timeout = cfg.budgets.command_timeout_ms / 1000
    publishing, stop, log = threading.Event(), threading.Event(), []
    publishing.set()
    peer = threading.Thread(target=_peer_loop, args=(cfg, tmp_path, publishing, stop, log))
    peer.start()
    cmd = [sys.executable, "-m", "dualsys.cli", "sim", "--driver", "bridge", "--no-rt"]
    sim = subprocess.Popen([*cmd, "--run-dir", str(tmp_path)], stderr=subprocess.PIPE)
    ctx = zmq.Context()
    state = Subscriber(ctx, cfg.endpoint("state", tmp_path), (RobotState,), latest=False, hwm=4096)
    pub = None
    try:
        assert state.recv(30_000) is not None, "no state from the robot process"
        pub = Publisher(ctx, cfg.endpoint("command", tmp_path), source="control", bind=True)
        a = cfg.limits()["default"].copy()
        j = cfg.joint_names.index("left_elbow_pitch_joint")
        a[j] = -0.6

        def send_for(seconds, target):
            """Command `target` every 5 ms; returns the receive times of robot states."""
            seen, end = [], time.monotonic() + seconds
            while time.monotonic() < end:
                pub.send(Command(q=target, dq=np.zeros(cfg.n_joints), mode="run"))
                while state.recv(0) is not None:
                    seen.append(time.monotonic())
                time.sleep(DT)
            return seen

        send_for(2.5, a)  # soft start (1.5 s), then following
        assert log and log[-1][1] == "run" and abs(log[-1][2][j] - a[j]) < 1e-6
        t_stop = time.monotonic()
        publishing.clear()
        seen = send_for(0.6, a)
        late = [s for s in seen if s > t_stop + timeout + 0.1]
        assert not late, f"{len(late)} states republished after the peer went silent"
        after = [(t, m) for t, m, _ in log if t > t_stop]
        holds = [t for t, m in after if m == "hold"]
        assert holds, f"robot side never held: {[m for _, m in after][-5:]}"
        assert holds[0] - t_stop <= timeout + 0.1
        assert after[-1][1] == "hold"
        held = log[-1][2].copy()
        n_before = len(log)
        b = a.copy()
        b[j] = -1.2  # resume towards another pose: the re-entry ramps from the held pose
        publishing.set()
        seen = send_for(1.0, b)
        assert len(seen) > 50, "state did not resume"
        runs = np.array([q for _, m, q in log[n_before:] if m == "run"])
        assert len(runs) > 20
        assert abs(runs[0, j] - held[j]) < 0.05, "re-entry jumped to the command"
        assert np.abs(np.diff(runs[:, j])).max() < 0.05
    finally:
        sim.send_signal(signal.SIGTERM)
        rc = sim.wait(15)
        stop.set()
        peer.join(5)
        state.close()
        if pub is not None:
            pub.close()
        ctx.term()
    assert rc == 0, sim.stderr.read().decode()
    summary = json.loads((tmp_path / "robot.json").read_text())
    assert summary["state_stale_trips"] == 1 and summary["state_stale_ticks"] > 0
    assert summary["watchdog_trips"] == 0
