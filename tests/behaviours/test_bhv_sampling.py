"""The policy's sampling noise scale travels in policy.json and old specs still load."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import torch

from dualsys.system1.policy import (
    ChunkSampler,
    FlowPolicy,
    PolicySpec,
    load_checkpoint,
    save_checkpoint,
)


def _sampler(cfg, tmp_path, noise_scale: float | None) -> ChunkSampler:
    spec = replace(PolicySpec.for_robot(cfg), width=32, layers=1)
    if noise_scale is not None:
        spec = replace(spec, noise_scale=noise_scale)
    torch.manual_seed(0)
    path = save_checkpoint(FlowPolicy(spec), tmp_path / "policy.safetensors")
    if noise_scale is None:  # a spec written before the field existed
        raw = asdict(spec)
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
