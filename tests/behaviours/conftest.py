"""Fixtures of the behaviour tests: the expert (cfg and sim come from tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def expert(cfg, sim):
    from dualsys.behaviours.expert import Expert
    from dualsys.behaviours.kinematics import Kinematics

    return Expert(cfg, Kinematics(cfg, sim.model, sim.jmap.qpos_adr))
