"""The policy's sampling noise scale travels in policy.json (a spec without it samples from the
unscaled noise); prefix conditioning (training-time real-time chunking) makes the policy
continue frozen actions."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import torch

from dualsys.system1.policy import (
    ChunkSampler,
    FlowPolicy,
    PolicyNorm,
    PolicySpec,
    flow_loss,
    load_checkpoint,
    save_checkpoint,
)


def _sampler(cfg, tmp_path, noise_scale: float | None) -> ChunkSampler:
    spec = replace(PolicySpec.for_robot(cfg), width=32, layers=1)
    if noise_scale is not None:
        spec = replace(spec, noise_scale=noise_scale)
    torch.manual_seed(0)
    path = save_checkpoint(
        FlowPolicy(spec, PolicyNorm.for_robot(cfg)), tmp_path / "policy.safetensors"
    )
    if noise_scale is None:  # a spec that does not set it
        raw = json.loads(path.with_suffix(".json").read_text())
        del raw["noise_scale"]
        path.with_suffix(".json").write_text(json.dumps(raw))
    model = load_checkpoint(path, PolicySpec.for_robot(cfg))
    return ChunkSampler(model, model.spec, cfg, "fp32")


def test_noise_scale(cfg, tmp_path):
    q = cfg.limits()["default"]
    lat = np.random.default_rng(0).standard_normal(cfg.system2.latent_dim).astype(np.float32)
    old = _sampler(cfg, tmp_path, None)
    assert old.noise_scale == 1.0
    a, b = old.sample(lat, q, 0 * q), old.sample(lat, q, 0 * q)
    assert np.abs(a - b).max() > 1e-3  # stochastic: fresh noise per chunk
    det = _sampler(cfg, tmp_path, 0.0)
    assert det.spec.noise_scale == 0.0
    a, b = det.sample(lat, q, 0 * q), det.sample(lat, q, 0 * q)
    assert np.array_equal(a, b)  # starts from the noise mean: one chunk per input


def _train_holds(
    cfg, prefix_max: int, steps: int = 400, prefix_offset: float = 0.0, in_state: bool = False
) -> ChunkSampler:
    """A tiny policy trained on chunks that hold a random pose which nothing but the chunk's
    own first actions reveal (latent and state are zero); in_state: the state shows the pose
    too (the controlled joints' normalised positions)."""
    spec = replace(
        PolicySpec.for_robot(cfg), width=64, layers=2, noise_scale=0.0,
        prefix_conditioning=prefix_max > 0,
    )  # fmt: skip
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits (or spins)
    model = FlowPolicy(spec)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    lat, st = torch.zeros(64, spec.latent_dim), torch.zeros(64, spec.state_dim)
    ctrl = list(cfg.controlled_indices)
    for _ in range(steps):
        x1 = _holds(gen, 64, spec)
        if in_state:
            st[:, ctrl] = x1[:, 0]
        loss = flow_loss(model, x1, lat, st, gen, prefix_max, prefix_offset)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ChunkSampler(model.eval(), spec, cfg, "fp32")


def _holds(gen: torch.Generator, n: int, spec: PolicySpec) -> torch.Tensor:
    """Chunks that hold one random pose (per joint in [-0.8, 0.8]) for the whole horizon."""
    pose = 1.6 * torch.rand(n, 1, spec.action_dim, generator=gen) - 0.8
    return pose.expand(n, spec.horizon, spec.action_dim)


def test_prefix_conditioning_continues_the_frozen_actions(cfg):
    """Trained with given prefixes, the policy continues the frozen actions of real-time
    chunking: with 4 of them given it keeps the pose they hold; without, it cannot know it."""
    gen = torch.Generator().manual_seed(7)
    truth = _holds(gen, 8, PolicySpec.for_robot(cfg)).numpy()
    sampler = _train_holds(cfg, prefix_max=8, steps=400)
    frozen, z = 4, np.zeros(cfg.n_joints)
    lat = np.zeros(cfg.system2.latent_dim, np.float32)
    given, blind = [], []
    for x1 in truth:
        prefix = sampler.mid + sampler.half * x1[:frozen]
        out = sampler.sample(lat, z, z, prefix, np.ones(frozen, np.float32))
        np.testing.assert_array_equal(out[:frozen], prefix.astype(np.float32))
        given.append(np.abs((out[frozen:] - sampler.mid) / sampler.half - x1[frozen:]).mean())
        out = sampler.sample(lat, z, z)
        blind.append(np.abs((out[frozen:] - sampler.mid) / sampler.half - x1[frozen:]).mean())
    assert np.mean(given) < 0.1 and np.mean(given) < 0.25 * np.mean(blind), (given, blind)


def test_prefix_offset_corrects_a_prefix_off_the_pose(cfg):
    """Trained with offset prefixes, the policy returns to the pose the state shows when the
    frozen actions lie off it (its own undershoot, fed back); trained with exact prefixes it
    continues the offset prefix instead."""
    gen = torch.Generator().manual_seed(7)
    truth = _holds(gen, 8, PolicySpec.for_robot(cfg)).numpy()
    lat = np.zeros(cfg.system2.latent_dim, np.float32)
    ctrl, frozen, off = cfg.controlled_indices, 4, 0.15
    errs = {}
    for name, po in (("exact", 0.0), ("offset", 0.2)):
        sampler = _train_holds(cfg, prefix_max=8, steps=400, prefix_offset=po, in_state=True)
        e = []
        for x1 in truth:
            q = sampler.q_mid.copy()
            q[ctrl] = sampler.mid + sampler.half * x1[0]
            prefix = sampler.mid + sampler.half * (x1[:frozen] + off)
            out = sampler.sample(lat, q, 0 * q, prefix, np.ones(frozen, np.float32))
            e.append(np.abs((out[-4:] - sampler.mid) / sampler.half - x1[-4:]).mean())
        errs[name] = float(np.mean(e))
    assert errs["offset"] < 0.4 * off and errs["offset"] < 0.6 * errs["exact"], errs
