"""One state normalisation for training and inference, System 1 and System 2 alike."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from dualsys import config
from dualsys.behaviours.train import Trainer
from dualsys.normalise import STATE_CLIP, StateNorm
from dualsys.system1 import policy as P  # noqa: N812
from dualsys.system2.fusion import StateFeatures

CFG = config.load_robot("gr1")


def _untrained_sampler() -> P.ChunkSampler:
    cfg = dataclasses.replace(CFG, policy=dataclasses.replace(CFG.policy, checkpoint=None))
    return P.build(cfg, untrained=True)[0]


def _states(n: int = 64):
    lim = CFG.limits()
    rng = np.random.default_rng(0)
    q = rng.uniform(lim["min"] - 0.1, lim["max"] + 0.1, (n, CFG.n_joints))
    dq = rng.normal(0.0, 0.5, (n, CFG.n_joints)) * lim["velocity"]
    # glitched and hostile states: far outside the limits, finite
    q[0] = lim["max"] + 100.0
    dq[1] = 1e30
    dq[2] = -1e30
    return q, dq


def test_training_and_inference_see_the_same_state_features() -> None:
    sampler = _untrained_sampler()
    fusion = StateFeatures(CFG.limits())
    trainer = Trainer.__new__(Trainer)  # only its normalisation, no data or models
    trainer.norm = P.PolicyNorm.for_robot(CFG)
    q, dq = _states()
    batch = trainer._state(torch.from_numpy(q), torch.from_numpy(dq)).numpy()
    assert batch.dtype == np.float32 and batch.shape == (len(q), 2 * CFG.n_joints)
    for i in range(len(q)):
        policy_in = sampler.state_vector(q[i], dq[i])
        np.testing.assert_array_equal(policy_in, fusion(q[i], dq[i]))
        np.testing.assert_array_equal(policy_in, batch[i])
    assert np.abs(batch).max() == STATE_CLIP  # the hostile rows are clipped, not passed on
    assert np.abs(batch[3:]).max() < STATE_CLIP  # a robot inside its limits never is


def test_a_hostile_velocity_samples_as_the_clipped_one() -> None:
    """dq = 1e30 (finite: it passes the bus) reaches the network as the clip, not as 1e30."""
    sampler = _untrained_sampler()
    q = CFG.limits()["default"]
    lat = np.random.default_rng(1).standard_normal(CFG.system2.latent_dim).astype(np.float32)
    sampler.seed(3)
    hostile = sampler.sample(lat, q, np.full_like(q, 1e30))
    sampler.seed(3)
    clipped = sampler.sample(lat, q, STATE_CLIP * CFG.limits()["velocity"])
    assert np.isfinite(hostile).all()
    np.testing.assert_array_equal(hostile, clipped)


def test_state_norm_round_trips_through_json() -> None:
    norm = StateNorm.from_limits(CFG.limits())
    back = StateNorm.from_json(norm.to_json())
    q, dq = _states(4)
    np.testing.assert_array_equal(norm(q, dq), back(q, dq))
