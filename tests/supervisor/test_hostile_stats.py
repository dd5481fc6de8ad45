"""Issue 17.4: the supervisor believes only its children. Real ZeroMQ: the supervisor binds its
stats link, a real child process it started for "control" says Hello with its own pid, and a
rogue publisher on the same link claims "control" with another pid, sends a handshake that
would fail the run, sends Stats under another process's name and floods with random sources."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from dualsys import config
from dualsys.bus import Hello, Publisher, Stats
from dualsys.rundir import RunLock, make_run_dir
from dualsys.supervisor import MAX_DRAIN, Child, Supervisor

CFG = config.load_robot("gr1")
SOURCES = ("control", "robot", "policy", "rogue")

#: the honest child: says Hello with its own pid and publishes its stats, and Stats under
#: another name ("scene": where the simulation's ground truth went before it had its own link)
CHILD = """
import os, sys, time
import zmq
from dualsys import config
from dualsys.bus import Hello, Publisher, Stats
cfg = config.load_robot("gr1")
ctx = zmq.Context()
pub = Publisher(ctx, cfg.endpoint("stats", sys.argv[1]), sys.argv[2], bind=False)
hello = Hello(sys.argv[2], cfg.name, cfg.system2.latent_dim, cfg.n_joints, os.getpid())
end = time.monotonic() + 30
while time.monotonic() < end:
    pub.send(hello)
    pub.send(Stats(process=sys.argv[2], values={"rate_hz": 200.0, "honest": 1.0}))
    pub.send(Stats(process="scene", values={"episode": 7.0}))
    time.sleep(0.05)
"""


@pytest.fixture
def sup(tmp_path: Path):
    run = make_run_dir(tmp_path / "run")
    s = Supervisor(CFG, run)
    s.lock = RunLock(run)
    s._open_links()
    yield s
    s.stop()


def _child(sup: Supervisor, role: str) -> Child:
    child = Child(role, [sys.executable, "-c", CHILD, str(sup.run_dir), role])
    sup.children[role] = child
    sup._spawn(child)
    return child


def _rogue(sup: Supervisor) -> tuple[zmq.Context, dict[str, Publisher], callable]:
    """A rogue peer on the stats link, with a publisher per source name it claims."""
    ctx = zmq.Context()
    ep = CFG.endpoint("stats", sup.run_dir)
    pubs = {s: Publisher(ctx, ep, s, bind=False, hwm=100_000) for s in SOURCES}
    # ZeroMQ delivers only once both ends have processed the connection (the SUB sends its
    # subscription when it is next used, the PUB reads it when it next sends): warm up with
    # junk the codec drops, while the supervisor polls as it does when running
    for _ in range(10):
        for pub in pubs.values():
            pub.send_raw(b"warm-up")
        _poll_for(sup, 0.03)
    untrusted = sup.untrusted.copy()
    assert not untrusted, untrusted
    return ctx, pubs, lambda source, msg: pubs[source].send(msg)


def _poll_for(sup: Supervisor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sup._drain_stats()
        time.sleep(0.02)


def test_only_the_started_process_is_believed(sup: Supervisor) -> None:
    ctx, pubs, send = _rogue(sup)
    control = _child(sup, "control")
    fake_pid = control.proc.pid + 1
    n = CFG.n_joints
    # a rogue claiming to be control: wrong pid; one whose handshake would fail the run
    # (the old supervisor stopped everything on it); fake stats; fake scene numbers
    for _ in range(40):
        send("control", Hello("control", CFG.name, CFG.system2.latent_dim, n, fake_pid))
        send("control", Hello("control", "evil", 1, 1, fake_pid))
        send("rogue", Hello("control", CFG.name, CFG.system2.latent_dim, n, control.proc.pid))
        send("robot", Stats(process="scene", values={"episode": 666.0}))
        send("rogue", Stats(process="scene", values={"episode": 666.0}))
        send("policy", Stats(process="policy", values={"rate_hz": 1.0}))
        time.sleep(0.005)
    _poll_for(sup, 0.5)
    deadline = time.monotonic() + 30
    while not control.ready and time.monotonic() < deadline:
        _poll_for(sup, 0.1)
    assert control.ready, "the honest child's Hello was not taken"
    assert sup.failure == "", sup.failure  # the rogue's bad handshake did not stop the run
    assert sup.untrusted["wrong_pid"] >= 80
    assert sup.untrusted["unknown_source"] >= 80  # "rogue" and "policy"/"robot" not started
    _poll_for(sup, 0.3)
    assert control.stats.get("honest") == 1.0
    # Stats under another process name are not believed, even from the started child
    assert sup.untrusted["unknown_process"] > 0
    for p in pubs.values():
        p.close()
    ctx.destroy(0)


def test_stats_from_a_believed_source_need_the_childs_pid(sup: Supervisor) -> None:
    """After control's Hello, a peer sending Stats under control's source name is not believed:
    its pid (this test process) is not the child's."""
    ctx, pubs, send = _rogue(sup)
    control = _child(sup, "control")
    deadline = time.monotonic() + 30
    while not (control.ready and control.stats.get("honest") == 1.0):
        assert time.monotonic() < deadline, "the honest child was not heard"
        _poll_for(sup, 0.1)
    wrong0 = sup.untrusted["wrong_pid"]
    for _ in range(40):
        send("control", Stats(process="control", values={"honest": 0.0, "forged": 1.0}))
        time.sleep(0.005)
    _poll_for(sup, 0.5)
    assert "forged" not in control.stats and control.stats.get("honest") == 1.0
    assert sup.untrusted["wrong_pid"] - wrong0 >= 40
    for p in pubs.values():
        p.close()
    ctx.destroy(0)


def test_a_child_is_believed_only_under_its_own_process_name(sup: Supervisor) -> None:
    """The scene's ground truth has its own link (SceneTruth on `scene_truth`): the stats link
    takes a child's Stats only under the child's own role, even from the robot."""
    ctx, pubs, send = _rogue(sup)
    robot = _child(sup, "robot")
    deadline = time.monotonic() + 30
    while not (robot.ready and sup.untrusted["unknown_process"] > 0):
        assert time.monotonic() < deadline, "the robot child was not heard"
        send("rogue", Stats(process="scene", values={"episode": 666.0}))
        _poll_for(sup, 0.05)
    assert robot.stats.get("honest") == 1.0 and "episode" not in robot.stats
    assert sup.untrusted["unknown_source"] > 0
    for p in pubs.values():
        p.close()
    ctx.destroy(0)


def test_random_source_flood_is_bounded_and_drained_in_slices(sup: Supervisor) -> None:
    ctx, pubs, _ = _rogue(sup)
    sup.children["control"] = Child("control", [])  # a role with no process yet
    pub = pubs["rogue"]
    rng = np.random.default_rng(0)
    sent = 3000
    for i in range(sent):
        name = rng.bytes(8).hex()
        pub.source = name if i % 3 else "control"
        msg = (
            Stats(process=name, values={name: 1.0})
            if i % 2
            else Hello(name, CFG.name, 1, 1, os.getpid())
        )
        pub.send(msg)
    time.sleep(0.5)  # everything delivered into the supervisor's queue
    sup._drain_stats()
    taken = sum(sup.untrusted.values())
    assert 0 < taken <= MAX_DRAIN  # one call takes a bounded slice; poll() stays responsive
    _poll_for(sup, 1.0)
    assert sum(sup.untrusted.values()) >= sent * 0.9
    assert sup.children["control"].stats == {}
    assert len(sup.untrusted) <= 6  # counted by reason, not remembered by name
    for p in pubs.values():
        p.close()
    ctx.destroy(0)
