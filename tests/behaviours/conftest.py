"""Fixtures of the behaviour tests: the expert (cfg and sim come from tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def expert(cfg, sim):
    from dualsys.tasks import task_pack

    pack = task_pack(cfg)
    return pack.expert(pack.kinematics(sim.model, sim.jmap.qpos_adr))


@pytest.fixture(scope="module")
def brain(cfg):
    """System 2's encoder (from the encoder registry) and System 1's sampler, built as the live
    processes build them, from the shipped GR-1 checkpoints."""
    from dualsys.behaviours.evaluate import OfflineBrain

    return OfflineBrain(cfg, cfg.policy.checkpoint, cfg.system2.checkpoint)
