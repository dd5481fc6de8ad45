"""A tiny training run lowers the flow-matching loss, checkpoints load and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dualsys import config
from dualsys.behaviours.dataset import DatasetWriter, EpisodeRecorder
from dualsys.behaviours.features import (
    FeatureSet,
    build_cache,
    build_object_cache,
    build_pixel_cache,
)
from dualsys.behaviours.rollout import new_setup, run_expert
from dualsys.behaviours.train import TrainConfig, Trainer
from dualsys.system1.policy import (
    ChunkSampler,
    PolicySpec,
    load_checkpoint,
    runtime_settings,
)
from dualsys.system2.fusion import load_fusion
from dualsys.system2.text import TextEncoder
from dualsys.tasks.gr1_table.behaviours import expert_version


def _eval_loss(tr: Trainer) -> float:
    state = tr.gen.get_state()
    tr.gen.manual_seed(123)
    with torch.no_grad():
        rows = torch.arange(0, len(tr.fs), 3)
        loss = sum(float(tr.loss(rows)) for _ in range(4)) / 4
    tr.gen.set_state(state)
    return loss


def test_tiny_training_run(cfg, sim, expert, tmp_path):
    w = DatasetWriter(tmp_path / "data", cfg)
    rec = EpisodeRecorder(cfg)
    for i, b in enumerate(("raise_both_arms", "touch_red_cup")):
        setup = new_setup(sim, expert, b, b.replace("_", " "), seed=i)
        frames, hands, objs = run_expert(sim, expert, cfg, setup, seconds=1.0)
        w.add(rec.episode(frames, b, i, hands, objs))
    w.close()
    build_pixel_cache(tmp_path / "data", 64)
    build_object_cache(tmp_path / "data")
    fs = FeatureSet(build_cache(cfg, tmp_path / "data"))
    assert fs.objects is not None and fs.objects.shape == (len(fs), 2, 3)
    assert torch.allclose(
        fs.objects[fs.ep_start[1]], torch.as_tensor(np.asarray(objs[0]), dtype=torch.float32)
    )
    assert fs.vision.shape == (20, 1280) and fs.text_emb.shape == (2, 384)
    assert fs.pixels is not None and fs.pixels.shape == (20, 3, 64, 64)
    assert fs.pixels.dtype == torch.uint8 and fs.pixels.float().std() > 5
    # several datasets train as one: indices offset, shared phrasings not duplicated
    two = FeatureSet.merged([tmp_path / "data" / "features.npz"] * 2)
    one = FeatureSet(tmp_path / "data" / "features.npz")
    assert len(two) == 2 * len(one) and two.text_emb.shape == (2, 384)
    assert two.ep_len.tolist() == one.ep_len.tolist() * 2
    three = FeatureSet.merged([tmp_path / "data" / "features.npz"] * 3)
    assert three.ep_len.tolist() == one.ep_len.tolist() * 3  # episode ids stay distinct
    assert three.ep.max() == 3 * len(one.ep_len) - 1 and len(three.pixels) == 3 * len(one.pixels)
    assert torch.equal(two.vision[two.img[len(one) :]], one.vision[one.img])
    assert torch.equal(two.ep_text[2:], one.ep_text)
    assert torch.equal(two.act[two.ep_start[3] :], one.act[one.ep_start[1] :])
    assert torch.equal(three.objects[2 * len(one) :], one.objects)
    tc = TrainConfig(
        steps=60, batch=32, lr=2e-3, warmup=5, width=32, layers=1, save_every=30, aux_objects=0.5,
        text_side=True, aux_behaviour=0.5, noise_scale=0.05,
    )  # fmt: skip
    with pytest.raises(ValueError, match="add_side_features"):
        Trainer(cfg, fs, tmp_path / "ck0", tc)
    text = TextEncoder("cpu")
    fs.add_side_features(text.side)
    assert fs.text_side.shape == (2, 384)
    tr = Trainer(cfg, fs, tmp_path / "ck", tc)
    before = _eval_loss(tr)
    obj_before = tr.object_error_m(torch.arange(len(fs)))
    assert tr.beh_names == ["raise_both_arms", "touch_red_cup"]
    tr.run()
    after = _eval_loss(tr)
    assert after < 0.7 * before, (before, after)
    # the auxiliary head learns where the objects are (two placements here)
    obj_after = tr.object_error_m(torch.arange(len(fs)))
    assert obj_after < 0.5 * obj_before, (obj_before, obj_after)
    assert len(tr.aux_losses) == 60
    # the behaviour head reads the instructed behaviour from the latent
    assert float(tr.beh_loss) < 0.2
    assert tr.behaviour_accuracy(torch.arange(len(fs))) == 1.0
    # the saved weights are the running average, not the last step's
    assert not torch.equal(tr.ema_policy.out.weight, tr.policy.out.weight)
    # the checkpoints are exactly what System 1 and System 2 load
    model = load_checkpoint(tmp_path / "ck" / "policy.safetensors", PolicySpec.for_robot(cfg))
    assert model.spec.width == 32
    # ... with their contract: the action rate, the normalisation training used (the one
    # inference uses), the robot's run-time settings, and the recipe's sampling noise scale
    assert model.spec.noise_scale == tc.noise_scale == 0.05
    assert model.spec.action_hz == cfg.rates.action_hz
    assert model.runtime == runtime_settings(cfg)
    sampler = ChunkSampler(model, model.spec, cfg, "fp32", model.normalisation)
    qs, dqs = fs.q.numpy(), fs.dq.numpy()
    live = np.stack([sampler.state_vector(q, dq) for q, dq in zip(qs, dqs, strict=True)])
    np.testing.assert_array_equal(tr._state(fs.q, fs.dq).numpy(), live)
    head = load_fusion(tmp_path / "ck" / "fusion.safetensors", 384, 1280, 2 * cfg.n_joints, 512)
    assert head.wants_pixels and head.dims["spatial_k"] == tc.spatial_k
    assert head.text_side and head.text[0].in_features == 768
    assert head.state_norm.to_json() == model.normalisation.state.to_json()
    assert not model.spec.latent_tokens
    assert (tmp_path / "ck" / "loss.png").stat().st_size > 1000
    # resume: a new trainer continues from step 60 with the same weights
    tc2 = TrainConfig(**{**tc.__dict__, "steps": 70})
    tr2 = Trainer(cfg, fs, tmp_path / "ck", tc2)
    assert tr2.step == 60
    assert torch.equal(tr2.beh_head.weight, tr.beh_head.weight)  # resumed, not re-initialised
    assert abs(_eval_loss(tr2) - after) < 1e-4
    tr2.run()
    assert json.loads((tmp_path / "ck" / "train_state.json").read_text())["step"] == 70
    fs.objects = None  # no object cache: the auxiliary loss is refused with the fix
    with pytest.raises(ValueError, match="build_object_cache"):
        Trainer(cfg, fs, tmp_path / "ck2", tc)


def test_instruction_augmentation_stays_within_the_behaviour(cfg, tmp_path):
    """Blended embeddings are unit vectors between phrasings of one behaviour, never across."""
    fs = FeatureSet.__new__(FeatureSet)
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(4, 384, generator=gen), dim=1)
    fs.text_emb, fs.texts = emb, ["a1", "a2", "b1", "b2"]
    fs.ep_text = torch.tensor([0, 1, 2, 3])
    fs.behaviours = ["a", "a", "b", "b"]
    fs.text_behaviour = list(fs.behaviours)
    tr = Trainer.__new__(Trainer)
    tr.fs, tr.gen = fs, gen
    tr.tc = TrainConfig(text_mix=1.0, text_noise=0.0)
    tr._text_groups()
    out = tr.texts(torch.tensor([0] * 200 + [2] * 200))
    assert torch.allclose(out.norm(dim=1), torch.ones(400), atol=1e-5)
    # every blend of phrasing 0 lies in the span of phrasings 0 and 1 (behaviour a) ...
    coef = torch.linalg.lstsq(emb[[0, 1]].T, out[:200].T).solution
    assert torch.allclose(emb[[0, 1]].T @ coef, out[:200].T, atol=1e-4)
    # ... and really moves towards phrasing 1 for some samples
    assert (coef[1] > 0.2).sum() > 20
    coef_b = torch.linalg.lstsq(emb[[2, 3]].T, out[200:].T).solution
    assert torch.allclose(emb[[2, 3]].T @ coef_b, out[200:].T, atol=1e-4)
    tr.tc = TrainConfig(text_mix=0.0, text_noise=0.3)
    noisy = tr.texts(torch.tensor([0] * 200))
    dist = (noisy - emb[0]).norm(dim=1)
    assert 0.15 < float(dist.mean()) < 0.45
    # a phrasing without demonstrations joins its behaviour; swapping draws it for episodes
    # of that behaviour only
    extra = torch.nn.functional.normalize(torch.randn(384, generator=gen), dim=0)
    assert fs.add_phrasings({"a": ["a1", "a3"]}, lambda t: extra.numpy()) == 1
    assert fs.behaviour_of_text() == ["a", "a", "b", "b", "a"]
    tr.tc = TrainConfig(text_swap=1.0, text_mix=0.0, text_noise=0.0)
    tr._text_groups()
    out = tr.texts(torch.tensor([0] * 300 + [2] * 300))
    nearest = (out @ fs.text_emb.T).argmax(dim=1)
    assert set(nearest[:300].tolist()) == {0, 1, 4}
    assert set(nearest[300:].tolist()) == {2, 3}
    with pytest.raises(ValueError, match="demonstrated for a"):
        fs.add_phrasings({"b": ["a3"]}, lambda t: extra.numpy())


def test_oversampling_draws_the_named_behaviours_more_often():
    fs = FeatureSet.__new__(FeatureSet)
    fs.behaviours = ["a", "b", "c"]
    fs.ep = torch.tensor([0] * 100 + [1] * 100 + [2] * 100)
    fs.ep_version = torch.ones(3, dtype=torch.int64)
    tr = Trainer.__new__(Trainer)
    tr.cfg = config.load_robot("gr1")
    tr.fs, tr.gen = fs, torch.Generator().manual_seed(0)
    tr.tc = TrainConfig(batch=4000)
    uniform = fs.ep[tr.draw_rows(300)]
    assert abs(float((uniform == 1).float().mean()) - 1 / 3) < 0.03
    tr.tc = TrainConfig(batch=4000, oversample="b", oversample_factor=3.0)
    del tr._row_weights
    share = float((fs.ep[tr.draw_rows(300)] == 1).float().mean())
    assert abs(share - 3 / 5) < 0.03, share  # weights 1 : 3 : 1
    del tr._row_weights
    tr.tc = TrainConfig(oversample="dance", oversample_factor=2.0)
    with pytest.raises(ValueError, match="dance"):
        tr.draw_rows(300)


def test_episodes_of_an_outdated_expert_are_left_out():
    fs = FeatureSet.__new__(FeatureSet)
    fs.behaviours = ["wave_right_hand", "wave_right_hand", "point_forward"]
    fs.ep = torch.tensor([0] * 100 + [1] * 100 + [2] * 100)
    fs.ep_version = torch.tensor([1, expert_version("wave_right_hand"), 1])
    assert expert_version("wave_right_hand") > 1  # the waves were re-demonstrated
    assert fs.current_episodes(expert_version).tolist() == [False, True, True]
    tr = Trainer.__new__(Trainer)
    tr.cfg = config.load_robot("gr1")
    tr.fs, tr.gen = fs, torch.Generator().manual_seed(0)
    tr.tc = TrainConfig(batch=4000)
    drawn = fs.ep[tr.draw_rows(300)]
    assert not (drawn == 0).any() and abs(float((drawn == 1).float().mean()) - 0.5) < 0.03
