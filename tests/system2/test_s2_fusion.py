"""Fusion head: documented seeded init, checkpoint format, refusal to guess."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dualsys import config
from dualsys.normalise import StateNorm
from dualsys.system2.fusion import (
    FusionError,
    FusionHead,
    StateFeatures,
    load_fusion,
    make_fusion,
    save_fusion,
)

DIMS = {"text_dim": 384, "vision_dim": 1280, "state_dim": 88, "latent_dim": 512}


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(384, generator=g), torch.rand(1280, generator=g) * 3, torch.randn(88))


def test_seeded_init_ignores_the_global_rng() -> None:
    torch.manual_seed(1)
    a, _ = make_fusion(None, True, **DIMS)
    torch.manual_seed(2)
    torch.randn(1000)
    b, _ = make_fusion(None, True, **DIMS)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x = _inputs(0)
    with torch.inference_mode():
        assert torch.equal(a(*x), b(*x))
    # ... and differs from another seed.
    c = FusionHead(**DIMS).seeded_init(seed=7)
    assert not torch.equal(a.mlp[0].weight, c.mlp[0].weight)


def test_latent_scale_contract() -> None:
    head, _ = make_fusion(None, True, **DIMS)
    with torch.inference_mode():
        z = head(*_inputs(3))
    assert z.shape == (512,)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std(unbiased=False)) - 1) < 1e-3


def test_checkpoint_round_trip(tmp_path) -> None:
    head = FusionHead(**DIMS, width=64).seeded_init(seed=3)
    path = tmp_path / "fusion.safetensors"
    save_fusion(head, path)
    loaded, how = make_fusion(path, False, **DIMS)
    assert str(path) in how
    x = _inputs(1)
    with torch.inference_mode():
        assert torch.equal(head(*x), loaded(*x))


def test_checkpoint_with_wrong_dims_is_refused(tmp_path) -> None:
    path = tmp_path / "fusion.safetensors"
    save_fusion(FusionHead(**{**DIMS, "latent_dim": 256}, width=32), path)
    with pytest.raises(FusionError, match="latent_dim = 256, this setup needs 512"):
        load_fusion(path, **DIMS)


def test_not_a_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(FusionError, match="not a readable safetensors"):
        load_fusion(path, **DIMS)


def test_no_checkpoint_needs_the_explicit_flag(tmp_path) -> None:
    with pytest.raises(FusionError, match="--untrained"):
        make_fusion(None, False, **DIMS)
    with pytest.raises(FusionError, match="both"):
        make_fusion(tmp_path / "x.safetensors", True, **DIMS)


def test_state_features_are_scaled_by_the_limits() -> None:
    cfg = config.load_robot("gr1")
    lim = cfg.limits()
    sf = StateFeatures(lim)
    out = sf(lim["max"], lim["velocity"])
    assert out.shape == (2 * cfg.n_joints,) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, atol=1e-5)
    np.testing.assert_allclose(sf(lim["min"], -lim["velocity"]), -1.0, atol=1e-5)
    with pytest.raises(ValueError, match="state must be"):
        sf(np.zeros(3), np.zeros(3))


def test_spatial_pathway_locates_a_dot_and_round_trips(tmp_path) -> None:
    """The spatial keypoints follow where things are in the frame; the checkpoint keeps them."""
    from dualsys.system2.fusion import SpatialKeypoints
    from dualsys.system2.vision import to_pixels

    kp = SpatialKeypoints(k=1, pixels=64)
    with torch.no_grad():  # a hand-set detector of red: the heat map is the red channel
        for conv in (kp.net[0], kp.net[2], kp.net[4]):
            conv.weight.zero_()
            conv.bias.zero_()
        kp.net[0].weight[0, 0, 2, 2] = 1.0
        kp.net[2].weight[0, 0, 1, 1] = 1.0
        kp.net[4].weight[0, 0, 0, 0] = 40.0
    xs = []
    for col in (20, 100):
        img = np.zeros((128, 128, 3), np.uint8)
        img[60:68, col : col + 8, 0] = 255
        px = torch.from_numpy(to_pixels(img, 64))[None]
        assert px.shape == (1, 3, 64, 64) and px.dtype == torch.uint8
        with torch.no_grad():
            xs.append(float(kp(px)[0, 0]))
    assert xs[0] < -0.4 and xs[1] > 0.4, xs
    head = FusionHead(**DIMS, width=32, spatial_k=4).seeded_init(seed=5)
    assert head.wants_pixels
    x = _inputs(2)
    px = torch.from_numpy(to_pixels(np.full((128, 128, 3), 90, np.uint8)))
    with pytest.raises(ValueError, match="pass the pixels"):
        head(*x)
    path = tmp_path / "spatial.safetensors"
    save_fusion(head, path)
    loaded = load_fusion(path, **DIMS)
    assert loaded.dims["spatial_k"] == 4
    with torch.inference_mode():
        assert torch.equal(head(*x, px), loaded(*x, px))
        batched = loaded(*(v[None].repeat(3, 1) for v in x), px[None].repeat(3, 1, 1, 1))
        assert torch.allclose(batched[1], loaded(*x, px), atol=1e-5)


def test_to_pixels_area_average() -> None:
    from dualsys.system2.vision import to_pixels

    img = np.zeros((128, 128, 3), np.uint8)
    img[::2, :, 1] = 200  # every other row: a 2x2 block averages to 100
    out = to_pixels(img, 64)
    assert out.shape == (3, 64, 64) and np.all(out[1] == 100) and np.all(out[0] == 0)
    odd = to_pixels(np.full((90, 120, 3), 77, np.uint8), 64)  # not a multiple: interpolate
    assert odd.shape == (3, 64, 64) and np.all(odd == 77)
    with pytest.raises(ValueError, match="uint8"):
        to_pixels(np.zeros((64, 64, 3), np.float32))


def test_side_feature_head_round_trip_and_older_files(tmp_path) -> None:
    """A head with the side feature reads 2 x text_dim and says so after loading; a version 2
    file (no text_side key) loads as a plain head."""
    from safetensors.torch import save_file

    head = FusionHead(**DIMS, width=32, text_side=1).seeded_init(seed=3)
    assert head.text_side and head.text[0].in_features == 768
    path = tmp_path / "fusion.safetensors"
    save_fusion(head, path)
    loaded = load_fusion(path, **DIMS)
    assert loaded.text_side
    t, v, s = _inputs(1)
    x = (torch.cat([t, 0.5 * t]), v, s)
    with torch.inference_mode():
        assert torch.equal(head(*x), loaded(*x))
    old = FusionHead(**DIMS, width=32).seeded_init(seed=3)
    meta = {"format": "dualsys.system2.fusion", "version": "2"}
    meta.update({k: str(val) for k, val in old.dims.items() if k != "text_side"})
    save_file(dict(old.state_dict()), str(tmp_path / "v2.safetensors"), metadata=meta)
    assert not load_fusion(tmp_path / "v2.safetensors", **DIMS).text_side


def _norm_scaled(scale: float) -> StateNorm:
    n = StateNorm.from_limits(config.load_robot("gr1").limits())
    return StateNorm(n.q_mid, n.q_half * scale, n.dq_scale * scale, n.clip)


def test_checkpoint_carries_its_state_normalisation(tmp_path) -> None:
    path = tmp_path / "f.safetensors"
    trained_with = _norm_scaled(2.0)
    save_fusion(FusionHead(**DIMS, width=32), path, trained_with)
    head = load_fusion(path, **DIMS)
    np.testing.assert_array_equal(head.state_norm.q_half, trained_with.q_half)
    lim = config.load_robot("gr1").limits()
    sf = StateFeatures(lim)
    sf.use(head.state_norm)  # what the encoders do after loading
    # at the joint maximum the config's limits give 1.0; the checkpoint's (twice as wide) 0.5
    np.testing.assert_allclose(sf(lim["max"], lim["velocity"]), 0.5, atol=1e-5)
    save_fusion(FusionHead(**DIMS, width=32), path)  # no record: the config's limits stay
    assert load_fusion(path, **DIMS).state_norm is None


def test_bad_state_normalisation_record_is_refused(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    path = tmp_path / "f.safetensors"
    save_fusion(FusionHead(**DIMS, width=32), path, _norm_scaled(1.0))
    tensors = load_file(str(path))
    meta = {"format": "dualsys.system2.fusion", "version": "3", "width": "32", "text_side": "0"}
    meta.update({k: str(v) for k, v in DIMS.items()})
    bad = {
        "not json": "{",
        "negative half range": json.dumps({**_norm_scaled(-1.0).to_json()}),
        "missing field": json.dumps({"q_mid": [0.0]}),
    }
    for raw in bad.values():
        save_file(tensors, str(path), metadata={**meta, "state_norm": raw})
        with pytest.raises(FusionError, match="state_norm"):
            load_fusion(path, **DIMS)
    n = _norm_scaled(1.0)
    short = StateNorm(n.q_mid[:10], n.q_half[:10], n.dq_scale[:10])
    save_file(tensors, str(path), metadata={**meta, "state_norm": json.dumps(short.to_json())})
    with pytest.raises(FusionError, match="covers 10 joints"):
        load_fusion(path, **DIMS)


def test_shipped_fusion_sees_the_state_as_its_policy_was_trained() -> None:
    cfg = config.load_robot("gr1")
    head = load_fusion(cfg.system2.checkpoint, **DIMS)
    spec = json.loads((Path(cfg.system2.checkpoint).parent / "policy.json").read_text())
    assert head.state_norm is not None
    assert head.state_norm.to_json() == spec["normalisation"]["state"]


def test_builtin_encoder_normalises_the_state_with_its_checkpoint() -> None:
    from dualsys.system2 import encoders

    torch.set_num_threads(1)
    enc = encoders.create(config.load_robot("gr1"))
    enc.configure()
    assert enc.fusion.state_norm is not None and enc.state.norm is enc.fusion.state_norm
