"""The flow-matching policy: checkpoints, inference forms, real-time-chunking inpainting."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dualsys import config
from dualsys.system1 import policy as P  # noqa: N812

CFG = config.load_robot("gr1")
NC = len(CFG.controlled_indices)


def small_cfg(checkpoint=None):
    pol = dataclasses.replace(CFG.policy, width=64, layers=2, heads=2, checkpoint=checkpoint)
    return dataclasses.replace(CFG, policy=pol)


def test_checkpoint_roundtrip_gives_identical_chunks(tmp_path) -> None:
    cfg = small_cfg()
    model = P.FlowPolicy(P.PolicySpec.for_robot(cfg), P.PolicyNorm.for_robot(cfg))
    path = P.save_checkpoint(model, tmp_path / "policy.safetensors")
    sampler, info = P.build(small_cfg(path), precision="fp32")
    ref = P.ChunkSampler(model.eval(), model.spec, cfg, "fp32")
    lat = np.random.default_rng(0).standard_normal(CFG.system2.latent_dim).astype(np.float32)
    q = CFG.limits()["default"]
    a = sampler.sample(lat, q, q * 0)
    b = ref.sample(lat, q, q * 0)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert a.shape == (CFG.policy.chunk_horizon, NC) and info["weights"] == str(path)


def test_missing_checkpoint_needs_explicit_untrained_flag() -> None:
    with pytest.raises(P.PolicyError, match="untrained-policy"):
        P.build(small_cfg())
    sampler, info = P.build(small_cfg(), untrained=True)
    assert info["weights"].startswith("untrained")


def test_spec_mismatch_names_the_field(tmp_path) -> None:
    cfg = small_cfg()
    model = P.FlowPolicy(P.PolicySpec.for_robot(cfg), P.PolicyNorm.for_robot(cfg))
    path = P.save_checkpoint(model, tmp_path / "p.safetensors")
    spec = json.loads(path.with_suffix(".json").read_text())
    spec["horizon"] = 8
    path.with_suffix(".json").write_text(json.dumps(spec))
    with pytest.raises(P.PolicyError, match="horizon is 8"):
        P.load_checkpoint(path, P.PolicySpec.for_robot(cfg))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_inpainting_keeps_frozen_actions_exactly(precision: str) -> None:
    sampler, _ = P.build(small_cfg(), untrained=True, precision=precision)
    lim = CFG.limits()
    ctrl = CFG.controlled_indices
    rng = np.random.default_rng(2)
    prefix = rng.uniform(lim["min"][ctrl], lim["max"][ctrl], size=(6, NC)).astype(np.float32)
    weights = np.array([1, 1, 1, 0.6, 0.36, 0.2], np.float32)
    q = lim["default"]
    out = sampler.sample(np.zeros(CFG.system2.latent_dim, np.float32), q, q * 0, prefix, weights)
    tol = 1e-2 if precision == "bf16" else 1e-5
    np.testing.assert_allclose(out[:3], prefix[:3], atol=tol * 3)
    assert np.isfinite(out).all()
    assert np.all(out >= lim["min"][ctrl] - 1e-5) and np.all(out <= lim["max"][ctrl] + 1e-5)


def test_a_new_instruction_gets_a_chunk_at_once(tmp_path) -> None:
    """The policy process replans as soon as a latent for a new instruction arrives, and that
    chunk keeps only the frozen actions of the old one (no soft guidance to the old task)."""
    import time

    import zmq

    from dualsys.bus import Latent, Publisher, RobotState
    from dualsys.system1.policy_proc import PolicyLoop

    cfg = small_cfg()
    sampler, info = P.build(cfg, untrained=True, precision="fp32")
    ctx = zmq.Context()
    ep = cfg.endpoint
    stats = ctx.socket(zmq.SUB)
    stats.bind(ep("stats", tmp_path))
    loop = PolicyLoop(cfg, ctx, tmp_path, sampler, info)
    pubs = {n: Publisher(ctx, ep(n, tmp_path), "test", bind=True) for n in ("state", "latent")}
    q = CFG.limits()["default"]
    rng = np.random.default_rng(1)
    vec = rng.standard_normal(CFG.system2.latent_dim).astype(np.float32)

    def feed(instruction_id: int) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pubs["state"].send(RobotState(q=q, dq=q * 0, tau=q * 0))
            pubs["latent"].send(Latent(vector=vec, instruction_id=instruction_id))
            loop.poll_inputs(20)
            la = loop.latent
            if la.count and la.int("instruction_id") == instruction_id and loop.state is not None:
                return
        raise AssertionError("inputs never arrived")

    guidance = []
    real_sample = sampler.sample
    sampler.sample = lambda *a: guidance.append(a[4]) or real_sample(*a)
    try:
        feed(1)
        assert loop.step() and loop.chunks == 1  # first chunk
        assert not loop.step()  # same task, chunk still full: nothing due
        feed(2)
        assert loop.step() and loop.chunks == 2  # new task: due at once
        w = guidance[-1]
        assert w is not None and w.max() == 1.0 and set(np.unique(w)) <= {0.0, 1.0}
        assert 0 < (w == 1.0).sum() < len(w)  # the frozen prefix only
        assert not loop.step()
    finally:
        loop.close()
        for p in pubs.values():
            p.close()
        stats.close()
        ctx.destroy(0)
