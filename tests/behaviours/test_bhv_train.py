"""A tiny training run lowers the flow-matching loss, checkpoints load and resume."""

from __future__ import annotations

import json

import torch

from dualsys.behaviours.dataset import DatasetWriter, EpisodeRecorder
from dualsys.behaviours.features import FeatureSet, build_cache
from dualsys.behaviours.rollout import new_setup, run_expert
from dualsys.behaviours.train import TrainConfig, Trainer
from dualsys.system1.policy import PolicySpec, load_checkpoint
from dualsys.system2.fusion import load_fusion


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
    fs = FeatureSet(build_cache(cfg, tmp_path / "data"))
    assert fs.vision.shape == (20, 1280) and fs.text_emb.shape == (2, 384)
    # several datasets train as one: indices offset, shared phrasings not duplicated
    two = FeatureSet.merged([tmp_path / "data" / "features.npz"] * 2)
    one = FeatureSet(tmp_path / "data" / "features.npz")
    assert len(two) == 2 * len(one) and two.text_emb.shape == (2, 384)
    assert two.ep_len.tolist() == one.ep_len.tolist() * 2
    assert torch.equal(two.vision[two.img[len(one) :]], one.vision[one.img])
    assert torch.equal(two.ep_text[2:], one.ep_text)
    assert torch.equal(two.act[two.ep_start[3] :], one.act[one.ep_start[1] :])
    tc = TrainConfig(steps=60, batch=32, lr=2e-3, warmup=5, width=32, layers=1, save_every=30)
    tr = Trainer(cfg, fs, tmp_path / "ck", tc)
    before = _eval_loss(tr)
    tr.run()
    after = _eval_loss(tr)
    assert after < 0.7 * before, (before, after)
    # the saved weights are the running average, not the last step's
    assert not torch.equal(tr.ema_policy.out.weight, tr.policy.out.weight)
    # the checkpoints are exactly what System 1 and System 2 load
    model = load_checkpoint(tmp_path / "ck" / "policy.safetensors", PolicySpec.for_robot(cfg))
    assert model.spec.width == 32
    load_fusion(tmp_path / "ck" / "fusion.safetensors", 384, 1280, 2 * cfg.n_joints, 512)
    assert (tmp_path / "ck" / "loss.png").stat().st_size > 1000
    # resume: a new trainer continues from step 60 with the same weights
    tc2 = TrainConfig(**{**tc.__dict__, "steps": 70})
    tr2 = Trainer(cfg, fs, tmp_path / "ck", tc2)
    assert tr2.step == 60
    assert abs(_eval_loss(tr2) - after) < 1e-4
    tr2.run()
    assert json.loads((tmp_path / "ck" / "train_state.json").read_text())["step"] == 70
