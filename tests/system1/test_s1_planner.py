"""The policy's planning step (`Planner`) and the chunk hand-over into the kernel
(`KernelState.take_chunk`): the code the policy process, the control loop and the offline
evaluator share."""

from __future__ import annotations

import dataclasses

import numpy as np

from dualsys import config
from dualsys.system1 import interp
from dualsys.system1 import policy as P  # noqa: N812
from dualsys.system1.chunks import SETTLE_SUPPORT
from dualsys.system1.interp import KernelState
from dualsys.system1.planner import Planner

CFG = config.load_robot("gr1")
NC = len(CFG.controlled_indices)
H = CFG.policy.chunk_horizon
DT = 1_000_000_000 // CFG.rates.action_hz


class Recording:
    """The real (untrained, small) sampler, recording the prefix weights it is given."""

    def __init__(self) -> None:
        pol = dataclasses.replace(CFG.policy, width=64, layers=2, heads=2, checkpoint=None)
        self.sampler, _ = P.build(dataclasses.replace(CFG, policy=pol), untrained=True)
        self.weights: list[np.ndarray | None] = []

    def sample(self, latent, q, dq, prefix=None, weights=None):
        self.weights.append(weights)
        return self.sampler.sample(latent, q, dq, prefix, weights)


def _planner(sampler, settle_ms: float = 1000.0) -> Planner:
    cfg = dataclasses.replace(
        CFG, policy=dataclasses.replace(CFG.policy, switch_settle_ms=settle_ms)
    )
    return Planner.for_robot(cfg, sampler)


def test_due_when_low_or_at_once_for_a_new_instruction() -> None:
    s = Recording()
    p = _planner(s)
    q, lat = CFG.limits()["default"], np.zeros(CFG.system2.latent_dim, np.float32)
    first = p.step(0, 2 * DT, lat, 1, q, q * 0)
    assert first is not None and first.chunk is not None and first.chunk.chunk_id == 1
    assert first.chunk.t0_ns == 2 * DT  # cold start: now + delay, first action = the pose held
    assert p.step(DT, 2 * DT, lat, 1, q, q * 0) is None  # same instruction, chunk still full
    low = first.chunk.t0_ns + (H - CFG.policy.replan_below) * DT
    assert p.step(low, 2 * DT, lat, 1, q, q * 0) is not None  # runs low: due
    switch = p.step(low + DT, 2 * DT, lat, 2, q, q * 0)  # new instruction: due at once
    assert switch is not None and p.instruction == 2
    w = s.weights[-1]  # settling: the frozen prefix only, no guidance from the old task
    assert set(np.unique(w)) <= {0.0, 1.0} and 0 < (w == 1).sum() < len(w)
    need = -(-(low + DT + 2 * DT - switch.plan.t0_ns) // DT) + SETTLE_SUPPORT
    assert switch.plan.frozen == need


def test_without_settling_the_old_chunk_guides_the_new_one() -> None:
    s = Recording()
    p = _planner(s, settle_ms=0.0)
    q, lat = CFG.limits()["default"], np.zeros(CFG.system2.latent_dim, np.float32)
    p.step(0, 2 * DT, lat, 1, q, q * 0)
    p.step(DT, 2 * DT, lat, 2, q, q * 0)
    w = s.weights[-1]
    assert 0 < w.min() < 1  # soft guidance decaying over the overlap


def test_non_finite_actions_are_not_adopted() -> None:
    p = _planner(Recording())
    q = CFG.limits()["default"]
    lat = np.full(CFG.system2.latent_dim, 3e38, np.float32)  # finite, overflows the network
    out = p.step(0, 2 * DT, lat, 1, q, q * 0)
    assert out is not None and out.chunk is None
    assert p.current is None and p.chunks == 0 and p.instruction is None


def test_hand_over_blends_the_seam_and_only_when_following() -> None:
    k = KernelState(CFG.limits(), CFG.controlled_indices, H, CFG.rates.control_period_ns)
    q0 = CFG.limits()["default"].copy()
    k.reset(q0)
    tick = CFG.rates.control_period_ns
    far = (q0[CFG.controlled_indices] + 0.3)[None].repeat(H, 0)
    k.take_chunk(far, 0, DT, -tick, follow=False)  # stored, still holding
    assert k.I[interp.MODE] == interp.MODE_HOLD and k.I[interp.N_ACT] == H
    k.step(0)
    np.testing.assert_allclose(k.q, q0)
    k.take_chunk(far, 0, DT, 0, follow=True)  # follow: chunk mode, seam blended
    assert k.I[interp.MODE] == interp.MODE_CHUNK and k.I[interp.BLEND_T] == interp.BLEND_NS
    k.step(tick)
    # one tick after the hand-over the command has barely moved (blend, limits), not jumped
    assert np.abs(k.q - q0).max() < 0.05
