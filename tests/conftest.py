"""Fixtures shared by the test packages: the GR-1 config and one compiled simulation."""

from __future__ import annotations

import pytest

import dualsys.robot  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)
from dualsys import config


@pytest.fixture(scope="session")
def cfg():
    return config.load_robot("gr1")


@pytest.fixture(scope="module")
def sim(cfg):
    from dualsys.robot.simulation import Simulation

    s = Simulation(cfg)
    s.configure()
    s.activate()
    yield s
    s.deactivate()
