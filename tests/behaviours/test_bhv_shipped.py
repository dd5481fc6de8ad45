"""The shipped GR-1 weights load through System 1's and System 2's own loaders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dualsys.behaviours.phrasings import load_phrasings, robot_dir, training_phrasings
from dualsys.system1 import policy
from dualsys.system2.fusion import load_fusion
from dualsys.tasks import task_pack

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_checkpoints_load(cfg):
    assert cfg.policy.checkpoint is not None and cfg.system2.checkpoint is not None
    for path in (cfg.policy.checkpoint, cfg.system2.checkpoint):
        assert path.stat().st_size < 50e6, f"{path}: shipped weights must stay small"
    sampler, info = policy.build(cfg)
    assert info["weights"] == str(cfg.policy.checkpoint)
    q = cfg.limits()["default"]
    lat = np.random.default_rng(0).standard_normal(cfg.system2.latent_dim).astype(np.float32)
    chunk = sampler.sample(lat, q, np.zeros_like(q))
    assert chunk.shape == (cfg.policy.chunk_horizon, len(cfg.controlled_indices))
    assert np.isfinite(chunk).all()
    head = load_fusion(cfg.system2.checkpoint, 384, 1280, 2 * cfg.n_joints, cfg.system2.latent_dim)
    assert head.dims["latent_dim"] == cfg.system2.latent_dim
    assert head.text_side  # trained with the left/right side feature (TRAINING.md)
    assert json.loads(cfg.policy.checkpoint.with_suffix(".json").read_text())["horizon"] == 16


def test_heldout_phrasings_are_unseen(cfg):
    train = training_phrasings(cfg)  # raises on overlap
    held = load_phrasings(robot_dir(cfg) / "phrasings_heldout.toml", task_pack(cfg).behaviours)
    assert set(held) == set(train)


def test_benchmark_unseen_wordings_are_in_neither_phrasings_file(cfg):
    """benchmarks/phrasings_unseen_gr1.toml (the issue-20 point-7 check) is unseen text: no
    wording of it is a training or held-out phrasing, and it names every behaviour."""
    behaviours = task_pack(cfg).behaviours
    unseen = load_phrasings(ROOT / "benchmarks" / "phrasings_unseen_gr1.toml", behaviours)
    assert set(unseen) == set(behaviours)
    known = set()
    for name in ("phrasings_train.toml", "phrasings_heldout.toml"):
        for texts in load_phrasings(robot_dir(cfg) / name, behaviours).values():
            known |= {t.lower() for t in texts}
    assert not {t.lower() for texts in unseen.values() for t in texts} & known
