"""Fixtures shared by the test packages: the GR-1 config and one compiled simulation."""

from __future__ import annotations

import os

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


@pytest.fixture
def netns():
    """Two test hosts in network namespaces (dualsys.testing.netns): the (server, robot)
    namespace names; skipped with the reason where they cannot be made (not root, no `ip`)."""
    from dualsys.testing.netns import NetnsError, two_hosts

    try:
        with two_hosts() as hosts:
            yield (hosts.server_ns, hosts.robot_ns)
    except NetnsError as exc:
        pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def _runner_stays_off_realtime(request):
    """A test must never leave the test runner on a real-time policy: every later test (and
    every process it starts, which inherits the policy) would then compete with the control
    loop at FIFO priority. Fails the test that did it, naming the policy."""
    yield
    policy = os.sched_getscheduler(0)
    if policy != os.SCHED_OTHER:
        prio = os.sched_getparam(0).sched_priority
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        pytest.fail(f"{request.node.nodeid} left the test runner on policy {policy} prio {prio}")
