"""The policy's inference forms: fp32-ort runs the shipped weights to the fp32 reference chunk."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dualsys import config
from dualsys.system1 import policy as P  # noqa: N812
from dualsys.system1.policy_onnx import OnnxModule

CFG = config.load_robot("gr1")


@pytest.fixture(scope="module")
def samplers() -> dict[str, P.ChunkSampler]:
    return {form: P.build(CFG, precision=form)[0] for form in ("fp32", "fp32-ort")}


def _inputs(seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    lim = CFG.limits()
    ctrl = CFG.controlled_indices
    q = rng.uniform(lim["min"], lim["max"]).astype(np.float32)
    dq = rng.normal(0, 0.5, len(q)).astype(np.float32)
    lat = rng.standard_normal(CFG.system2.latent_dim).astype(np.float32)
    prefix = rng.uniform(lim["min"][ctrl], lim["max"][ctrl], (6, len(ctrl))).astype(np.float32)
    return lat, q, dq, prefix, np.array([1, 1, 1, 0.6, 0.36, 0.2], np.float32)


@pytest.mark.parametrize("rtc", [False, True], ids=["fresh", "rtc-prefix"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fp32_ort_gives_the_fp32_chunk_of_the_shipped_weights(samplers, seed, rtc) -> None:
    lat, q, dq, prefix, weights = _inputs(seed)
    args = (lat, q, dq, prefix, weights) if rtc else (lat, q, dq)
    chunks = {}
    for form, sampler in samplers.items():
        sampler.seed(seed)
        chunks[form] = sampler.sample(*args)
    half = samplers["fp32"].half
    err = np.abs((chunks["fp32-ort"] - chunks["fp32"]) / half).max()
    assert err <= 1e-4, f"fp32-ort differs from fp32 by {err:.2e} (normalised)"
    assert isinstance(samplers["fp32-ort"].integrate, OnnxModule)
    if rtc:  # frozen actions copied exactly
        np.testing.assert_allclose(chunks["fp32-ort"][:3], prefix[:3], atol=1e-5)


@pytest.mark.parametrize("conditioning", [False, True], ids=["inpainting", "prefix-cond"])
def test_fp32_ort_follows_the_sampler_settings(conditioning) -> None:
    """Both RTC modes and the latent-token path go through the exported graph unchanged."""
    import dataclasses

    import torch

    pol = dataclasses.replace(CFG.policy, width=64, layers=2, heads=2, checkpoint=None)
    cfg = dataclasses.replace(CFG, policy=pol)
    spec = dataclasses.replace(
        P.PolicySpec.for_robot(cfg), prefix_conditioning=conditioning, latent_tokens=True
    )
    torch.manual_seed(0)
    model = P.FlowPolicy(spec).eval()
    ref, ort = (P.ChunkSampler(model, spec, cfg, form) for form in ("fp32", "fp32-ort"))
    lat, q, dq, prefix, weights = _inputs(5)
    a, b = ref.sample(lat, q, dq, prefix, weights), ort.sample(lat, q, dq, prefix, weights)
    assert np.abs((a - b) / ref.half).max() <= 1e-4


def test_every_configurable_precision_is_a_form_and_a_bad_one_is_named() -> None:
    assert set(P.FORMS) == set(config.PRECISIONS)
    model = P.FlowPolicy(P.PolicySpec.for_robot(CFG))
    with pytest.raises(P.PolicyError, match=r"precision 'fp16': expected one of .*fp32-ort"):
        P.optimise(model, "fp16")


def test_the_shipped_form_is_fp32_ort_and_matches_the_checkpoint_settings(capsys) -> None:
    """gr1 ships fp32-ort; its checkpoint was validated with fp32, the same maths: no warning."""
    assert CFG.policy.precision == "fp32-ort"
    sampler, info = P.build(CFG)
    assert info["precision"] == "fp32-ort" and isinstance(sampler.integrate, OnnxModule)
    assert "not the settings" not in capsys.readouterr().err


def test_the_policy_process_runs_the_configured_form(tmp_path) -> None:
    """`dualsys system1 policy` builds the form of `policy.precision` and reports it."""
    cmd = [sys.executable, "-m", "dualsys.cli", "system1", "policy", "--robot", "gr1",
           "--run-dir", str(tmp_path), "--duration", "0.5"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "policy.json").read_text())
    assert summary["precision"] == CFG.policy.precision == "fp32-ort"
