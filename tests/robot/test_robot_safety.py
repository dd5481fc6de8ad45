"""Robot-side safety: soft start, watchdog, velocity monitor, refusal of bad commands.

The closed-loop tests run the real MuJoCo simulation offline at the robot loop's 5 ms tick.
"""

from __future__ import annotations

import numpy as np
import pytest

from dualsys.robot.interface import DAMP, HOLD, RUN
from dualsys.robot.safety import RobotSafety, SafetySettings

DT = 0.005


def _far_pose(cfg):
    q = cfg.limits()["default"].copy()
    names = cfg.joint_names
    q[names.index("left_shoulder_pitch_joint")] = -1.0
    q[names.index("left_elbow_pitch_joint")] = -1.3
    q[names.index("right_shoulder_pitch_joint")] = -1.0
    return q


def _run(sim, safety, cmd, t0, seconds, send=True):
    """Closed loop for `seconds`; returns per-tick targets, modes and measured velocities."""
    targets, modes, peak = [], [], []
    t = t0
    for _ in range(round(seconds / DT)):
        if send:
            assert safety.offer(t, cmd, None, "run")
        s = sim.read_state()
        q, dq, mode = safety.update(t, s.q, s.dq)
        sim.write_command(q, dq, mode)
        sim.advance(DT)
        targets.append(q.copy())
        modes.append(mode)
        peak.append(np.abs(sim.read_state().dq).max())
        t += DT
    return np.array(targets), np.array(modes), np.array(peak), t


def test_soft_start_ramps_from_measured_pose(cfg, sim):
    sim.reset()
    cmd = _far_pose(cfg)
    peaks = {}
    for ramp in (1.5, 1e-3):  # with soft start, and (baseline) effectively without
        sim.reset()
        safety = RobotSafety(cfg, SafetySettings.from_config(cfg, soft_start_s=ramp))
        safety.reset(0.0, sim.read_state().q)
        targets, modes, peak, _ = _run(sim, safety, cmd, 0.0, 2.5)
        peaks[ramp] = peak.max()
        if ramp == 1.5:
            assert np.abs(targets[0] - cfg.limits()["default"]).max() < 1e-6  # no jump at start
            step = np.abs(np.diff(targets, axis=0)).max()
            assert step < 1.5 * 1.3 / 1.5 * DT * 1.05  # smoothstep slope bound per tick
            assert np.allclose(targets[-1], cmd)  # ramp finished
            assert (modes == RUN).all()
            arm = cfg.joint_names.index("left_elbow_pitch_joint")
            assert abs(sim.read_state().q[arm] - cmd[arm]) < 0.03
    assert peaks[1.5] < 3.0
    assert peaks[1e-3] > 2.0 * peaks[1.5], peaks  # soft start at least halves the peak speed


def test_watchdog_holds_then_resumes_smoothly(cfg, sim):
    sim.reset()
    safety = RobotSafety(cfg, SafetySettings.from_config(cfg, soft_start_s=0.2))
    safety.reset(0.0, sim.read_state().q)
    cmd = _far_pose(cfg)
    _, _, _, t = _run(sim, safety, cmd, 0.0, 2.0)  # ramp, then settle
    last_cmd = t - DT
    assert safety.mode == RUN and safety.watchdog_trips == 0
    _, modes, _, t = _run(sim, safety, cmd, t, 0.3, send=False)
    first_hold = last_cmd + DT * (1 + int(np.argmax(modes == HOLD)))
    timeout = cfg.budgets.command_timeout_ms / 1000
    assert timeout < first_hold - last_cmd <= timeout + 2 * DT  # tripped on time
    assert safety.watchdog_trips == 1  # counted once, not per tick
    held = sim.read_state().q.copy()
    _, modes2, peak, t = _run(sim, safety, cmd, t, 0.5, send=False)
    assert (modes2 == HOLD).all() and safety.watchdog_trips == 1
    assert np.abs(sim.read_state().q - held).max() < 0.01 and peak.max() < 0.1  # holding still
    targets, modes3, _, _ = _run(sim, safety, cmd, t, 0.4)
    assert modes3[0] == RUN and np.abs(targets[0] - held).max() < 0.01  # resumes by ramp
    assert np.allclose(targets[-1], cmd)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda q: q.__setitem__(3, np.nan), "nonfinite"),
        (lambda q: q.__setitem__(5, np.inf), "nonfinite"),
        (lambda q: q.__setitem__(0, 5.0), "out_of_limits"),
    ],
)
def test_bad_commands_never_applied(cfg, sim, edit, reason):
    sim.reset()
    safety = RobotSafety(cfg, SafetySettings.from_config(cfg, soft_start_s=0.01))
    safety.reset(0.0, sim.read_state().q)
    good = cfg.limits()["default"].copy()
    _run(sim, safety, good, 0.0, 0.05)
    bad = good.copy()
    edit(bad)
    assert safety.offer(0.05, bad, None, "run") is False
    assert safety.refused[reason] == 1 and safety.commands_refused == 1
    q, _, _ = safety.update(0.05, sim.read_state().q, sim.read_state().dq)
    sim.write_command(q, np.zeros(cfg.n_joints), RUN)
    assert np.isfinite(sim.data.ctrl).all()
    assert np.allclose(q, good)  # the previous valid command is still the target


def test_refusal_reasons_and_clipping(cfg):
    safety = RobotSafety(cfg)
    lim = cfg.limits()
    q = lim["default"].copy()
    assert not safety.offer(0.0, q[:10], None, "run")
    assert not safety.offer(0.0, q, np.zeros(3), "run")
    assert not safety.offer(0.0, q, None, "dance")
    assert not safety.offer(0.0, q, np.full(cfg.n_joints, np.nan), "run")
    assert dict(safety.refused) == {"wrong_size": 2, "bad_mode": 1, "nonfinite": 1}
    q[0] = lim["max"][0] + 0.01  # inside the tolerance: clipped, not refused
    dq = np.full(cfg.n_joints, 1e3)
    assert safety.offer(0.0, q, dq, "run")
    assert safety.clipped == 1
    out, dq_out, mode = safety.update(0.0, lim["default"], np.zeros(cfg.n_joints))
    safety_q, _, _ = safety.update(10.0, lim["default"], np.zeros(cfg.n_joints))
    assert safety_q[0] <= lim["max"][0]
    assert (np.abs(safety._cmd_dq) <= lim["velocity"]).all()


def test_velocity_monitor_holds_and_rearms(cfg):
    s = SafetySettings.from_config(cfg, soft_start_s=0.1, rearm_s=0.5, command_timeout_s=1.0)
    safety = RobotSafety(cfg, s)
    lim = cfg.limits()
    q = lim["default"].copy()
    safety.reset(0.0, q)
    zero = np.zeros(cfg.n_joints)
    safety.offer(0.0, q + 0.1 * (lim["max"] - q), None, "run")
    safety.update(0.0, q, zero)
    fast = zero.copy()
    j = cfg.joint_names.index("right_elbow_pitch_joint")
    fast[j] = 1.6 * lim["velocity"][j]
    moved = q + 0.05
    out, _, mode = safety.update(0.05, moved, fast)
    assert mode == HOLD and safety.velocity_trips == 1
    assert np.allclose(out, np.clip(moved, lim["min"], lim["max"]))
    for t in np.arange(0.06, 0.5, 0.01):  # still latched, still fast: one trip only
        safety.offer(t, q, None, "run")
        assert safety.update(t, moved, fast)[2] == HOLD
    assert safety.velocity_trips == 1
    assert safety.update(0.6, moved, zero)[2] == HOLD  # calm: re-armed, waits for a command
    safety.offer(0.61, q, None, "run")
    out, _, mode = safety.update(0.61, moved, zero)
    assert mode == RUN and np.allclose(out, np.clip(moved, lim["min"], lim["max"]))  # ramp


def test_commanded_hold_and_damp(cfg):
    safety = RobotSafety(cfg, SafetySettings.from_config(cfg, soft_start_s=0.01))
    q = cfg.limits()["default"].copy()
    zero = np.zeros(cfg.n_joints)
    safety.offer(0.0, q, None, "run")
    safety.update(0.0, q, zero)
    assert safety.update(0.02, q, zero)[2] == RUN
    safety.offer(0.03, q + 0.3, None, "hold")
    out, _, mode = safety.update(0.03, q + 0.01, zero)
    lim = cfg.limits()
    here = np.clip(q + 0.01, lim["min"], lim["max"])
    assert mode == HOLD and np.allclose(out, here)  # holds where it is, ignores q
    safety.offer(0.04, q, None, "damp")
    assert safety.update(0.04, q, zero)[2] == DAMP
    assert safety.update(1.0, q, zero)[2] == DAMP  # silence while damping: stays damped
    assert safety.watchdog_trips == 0
