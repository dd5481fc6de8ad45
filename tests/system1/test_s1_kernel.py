"""Smoothness of the numba command kernel: jumps, NaN, out-of-limit chunks, seams."""

from __future__ import annotations

import numpy as np
import pytest

from dualsys import config
from dualsys.system1 import interp
from dualsys.system1.interp import KernelState

CFG = config.load_robot("gr1")
LIM = CFG.limits()
CTRL = CFG.controlled_indices
H = CFG.policy.chunk_horizon
TICK = CFG.rates.control_period_ns
DT = 1_000_000_000 // CFG.rates.action_hz
TOL = 1e-6
MID = ((LIM["min"] + LIM["max"]) / 2)[CTRL]


def kernel() -> KernelState:
    k = KernelState(LIM, CTRL, H, TICK)
    k.reset(LIM["default"])
    return k


def load(k: KernelState, actions: np.ndarray, t0: int, blend_at: int | None = None) -> None:
    k.actions[:] = actions
    k.I[interp.N_ACT] = len(actions)
    k.I[interp.T0] = t0
    k.I[interp.DT] = DT
    k.I[interp.MODE] = interp.MODE_CHUNK
    if blend_at is not None:
        k.blend(blend_at, 80_000_000)


def run(k: KernelState, t_start: int, ticks: int) -> tuple[np.ndarray, np.ndarray]:
    qs, vs = np.zeros((ticks, k.n)), np.zeros((ticks, k.n))
    for i in range(ticks):
        k.step(t_start + i * TICK)
        qs[i], vs[i] = k.q, k.v
    return qs, vs


def check_limits(q: np.ndarray, v: np.ndarray, v_prev0: np.ndarray) -> None:
    dt = TICK * 1e-9
    assert np.all(q >= LIM["min"] - TOL) and np.all(q <= LIM["max"] + TOL)
    assert np.all(np.abs(v) <= LIM["velocity"] * (1 + 1e-9) + TOL)
    acc = np.diff(np.vstack([v_prev0, v]), axis=0) / dt
    assert np.all(np.abs(acc) <= LIM["accel"] * (1 + 1e-6) + 1e-6), np.abs(acc).max()
    # commanded velocity is the finite difference of commanded position (no hidden jumps)
    dq = np.diff(q, axis=0) / dt
    assert np.allclose(dq, v[1:], atol=1e-6)


def test_smooth_chunk_is_tracked_exactly() -> None:
    k = kernel()
    t = np.arange(H) * 0.02
    acts = MID + 0.05 * np.sin(2 * np.pi * 1.0 * t)[:, None]
    start = LIM["default"].copy()
    start[CTRL] = acts[0]
    k.reset(start)
    load(k, acts, 0)
    q, v = run(k, 0, 60)
    check_limits(q, v, np.zeros(k.n))
    # at the action grid points the command equals the action (after the first segment)
    for j in range(2, 12):
        i = j * DT // TICK
        np.testing.assert_allclose(q[i, CTRL], acts[j], atol=1e-9)


def test_jumps_and_out_of_limit_values_stay_within_limits() -> None:
    rng = np.random.default_rng(1)
    k = kernel()
    v0 = np.zeros(k.n)
    for c in range(5):
        acts = rng.uniform(-6, 6, size=(H, len(CTRL)))  # far outside every joint's range
        t0 = c * 8 * DT
        load(k, acts, t0, blend_at=t0 - TICK if c else None)
        q, v = run(k, t0, 8 * DT // TICK)
        check_limits(q, v, v0)
        v0 = v[-1].copy()
    assert k.trips == 0


def test_nan_chunk_holds_last_safe_command_and_counts() -> None:
    k = kernel()
    acts = np.tile(LIM["default"][CTRL] + 0.1, (H, 1))
    load(k, acts, 0)
    q1, v1 = run(k, 0, 20)
    bad = acts.copy()
    bad[5:9, 3] = np.nan
    bad[7, 0] = np.inf
    load(k, bad, 20 * TICK)
    q2, v2 = run(k, 20 * TICK, 40)
    assert k.trips > 0
    assert np.isfinite(q2).all() and np.isfinite(v2).all()
    check_limits(np.vstack([q1, q2]), np.vstack([v1, v2]), np.zeros(k.n))


@pytest.mark.parametrize("offset", [0.0, 0.05, 0.3])
def test_seam_blend_keeps_position_and_velocity_continuous(offset: float) -> None:
    k = kernel()
    t = np.arange(H) * 0.02
    acts = MID + 0.1 * np.sin(2 * np.pi * 0.8 * t)[:, None]
    load(k, acts, 0)
    q1, v1 = run(k, 0, 40)
    t_last = 39 * TICK
    new = acts + offset  # a new chunk that disagrees with the old one by `offset`
    load(k, new, 0, blend_at=t_last)
    q2, v2 = run(k, t_last + TICK, 40)
    q, v = np.vstack([q1, q2]), np.vstack([v1, v2])
    check_limits(q, v, np.zeros(k.n))
    dt = TICK * 1e-9
    # no step at the seam: the velocity change there is bounded by the acceleration limit
    assert np.all(np.abs(v2[0] - v1[-1]) <= LIM["accel"] * dt + 1e-9)
    # and the blend converges onto the new chunk within the blend time (80 ms = 16 ticks)
    i = 30
    k2 = kernel()
    load(k2, new, 0)
    k2.S[interp.S_Q] = q2[i - 1]
    k2.S[interp.S_V] = v2[i - 1]
    k2.step(t_last + (i + 1) * TICK)
    if offset <= 0.05:
        np.testing.assert_allclose(q2[i], k2.q, atol=1e-6)


def test_hold_and_default_modes_decelerate_smoothly() -> None:
    k = kernel()
    acts = np.linspace(MID - 0.3, MID + 0.3, H)
    load(k, acts, 0)
    q1, v1 = run(k, 0, 30)
    assert np.abs(v1[-1]).max() > 1.0  # it is moving fast when we switch
    k.S[interp.S_HOLD] = k.q
    k.I[interp.MODE] = interp.MODE_HOLD
    k.blend(29 * TICK, 80_000_000)
    q2, v2 = run(k, 30 * TICK, 100)
    k.I[interp.MODE] = interp.MODE_DEFAULT
    k.F[interp.SPEED] = 0.25
    k.blend(129 * TICK, 80_000_000)
    q3, v3 = run(k, 130 * TICK, 600)
    q, v = np.vstack([q1, q2, q3]), np.vstack([v1, v2, v3])
    check_limits(q, v, np.zeros(k.n))
    assert np.abs(v2[-1]).max() < 1e-6  # stopped in hold
    np.testing.assert_allclose(q3[-1], LIM["default"], atol=1e-4)  # back at the default pose
    assert np.all(np.abs(v3[20:]) <= 0.25 * LIM["velocity"] + 1e-9)
