"""The latent link's same-machine slot: System 2 writes it beside its ZeroMQ PUB, System 1's
control loop reads it (real slot, real sockets, the real ControlLoop), a hostile slot never
reaches the robot, and the config refuses a slot where it cannot be same-machine."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from dualsys import config
from dualsys.bus.codec import encode
from dualsys.bus.curve import BusSecurity
from dualsys.bus.latent_link import LatentOut, slot_endpoint
from dualsys.bus.limits import receive_spec, topic_limits
from dualsys.bus.messages import Latent
from dualsys.bus.roles import LINKS
from dualsys.bus.shm import SlotWriter, slot_path
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.rundir import make_run_dir, remove_links
from dualsys.system1.control import SAFE_NAMES, ControlLoop
from tests.reliability.fuzz_cases import GR1_DATA, dump_toml

CFG = config.load_robot("gr1")
P = CFG.rates.control_period_ns
DIM = CFG.system2.latent_dim


def _latent(step: int = 1) -> Latent:
    return Latent(vector=np.full(DIM, 0.25, np.float32), instruction_id=3, step=step)


def _load(tmp_path: Path, **endpoints: str) -> config.RobotConfig:
    data = copy.deepcopy(GR1_DATA)
    data["endpoints"].update(endpoints)
    path = tmp_path / "robot.toml"
    path.write_text(dump_toml(data))
    return config.load(path)


def test_gr1_has_a_latent_slot_with_the_latents_role_and_limits(tmp_path: Path) -> None:
    assert slot_endpoint(CFG, tmp_path) == f"shm://{tmp_path}/latent.slot"
    assert LINKS["latent_local"].server == LINKS["latent"].server
    assert topic_limits(CFG)["latent_local"] == topic_limits(CFG)["latent"]
    assert receive_spec(CFG, "latent_local")["shapes"] == receive_spec(CFG, "latent")["shapes"]


@pytest.mark.parametrize(
    ("endpoints", "key", "says"),
    [
        # the latent leaves this computer: a same-machine slot cannot mirror it
        ({"latent": "tcp://127.0.0.1:5999"}, "endpoints.latent_local", "same-machine"),
        ({"latent_local": "ipc://{run}/latent2.sock"}, "endpoints.latent_local", "shm://"),
        # shm:// on a ZeroMQ link: the error names the key and where shm:// belongs
        ({"state": "shm://{run}/state.slot"}, "endpoints.state", "latent_local"),
        ({"latent": "shm://{run}/latent.slot"}, "endpoints.latent", "latent_local"),
    ],
)
def test_config_refuses_a_slot_that_cannot_be_same_machine(
    tmp_path: Path, endpoints: dict, key: str, says: str
) -> None:
    with pytest.raises(config.ConfigError) as info:
        _load(tmp_path, **endpoints)
    assert info.value.key == key and says in str(info.value)


def test_a_config_without_the_slot_uses_zeromq_only(tmp_path: Path) -> None:
    data = copy.deepcopy(GR1_DATA)
    del data["endpoints"]["latent_local"]
    path = tmp_path / "robot.toml"
    path.write_text(dump_toml(data))
    assert slot_endpoint(config.load(path), tmp_path) is None


def test_system2_output_reaches_zeromq_and_the_slot_with_one_header(tmp_path: Path) -> None:
    """LatentOut sends each latent on ZeroMQ (what the recorder and tools read) and writes the
    same message (seq, time) into the slot."""
    ctx = zmq.Context()
    run = make_run_dir(tmp_path / "run")
    sec = BusSecurity(ctx, CFG, role="system2")
    out = LatentOut(ctx, CFG, run, sec, "system2")
    zsub = Subscriber(ctx, CFG.endpoint("latent", run), (Latent,), **receive_spec(CFG, "latent"))
    ssub = Subscriber(ctx, slot_endpoint(CFG, run), (Latent,), **receive_spec(CFG, "latent"))
    try:
        time.sleep(0.3)  # the ZeroMQ subscription joins
        t = time.monotonic_ns()
        out.send(_latent(), t)
        a, b = ssub.recv(1000), zsub.recv(1000)
        assert a is not None and b is not None
        assert (a.header.seq, a.header.t_mono_ns) == (b.header.seq, b.header.t_mono_ns) == (1, t)
        assert out.sent == out.slot_sent == 1
    finally:
        for s in (out, zsub, ssub):
            s.close()
        sec.close()
        ctx.term()
    assert (run / "latent.slot").exists()
    remove_links(run)  # the run directory's clean-up removes the slot file with the sockets
    assert not (run / "latent.slot").exists() and not list(run.glob("*.sock"))


@pytest.fixture
def control(tmp_path: Path):
    ctx = zmq.Context()
    run = make_run_dir(tmp_path / "run")
    loop = ControlLoop(CFG, ctx, run)
    loop.configure()
    yield loop, ctx, run
    loop.close()
    ctx.term()


def _tick(loop: ControlLoop, i: int) -> None:
    loop.update(loop.start_ns + i * P)


def test_control_hears_zeromq_until_the_slot_delivers_then_the_slot(control) -> None:
    """A ZeroMQ-only peer (no System 2 writing the slot) is heard; once the slot delivers, the
    loop takes its latents from the slot and counts which path each came from."""
    loop, ctx, run = control
    pub = Publisher(ctx, CFG.endpoint("latent", run), "system2")
    writer = None
    try:
        time.sleep(0.3)
        loop.activate(time.monotonic_ns())
        pub.send(_latent())
        assert loop.latent_sub.sock.poll(1000)
        _tick(loop, 1)
        assert loop.latent_seq == 1 and loop.latent_in.via == {"shm": 0, "zmq": 1}
        writer = SlotWriter(slot_endpoint(CFG, run), topic_limits(CFG)["latent"].max_bytes)
        time.sleep(0.15)  # past the reader's reopen interval: it maps the new file
        t = time.monotonic_ns()
        writer.write(encode(_latent(), 7, "system2", t))
        _tick(loop, 2)
        assert loop.latent_seq == 7 and loop.latent_t_ns == t
        pub.send(_latent())  # the ZeroMQ copy of a live slot is not taken again
        assert loop.latent_sub.sock.poll(1000)
        _tick(loop, 3)
        assert loop.latent_seq == 7
        assert loop.summary("other", [], time.monotonic_ns())["latent_link"] == {
            "shm": 1,
            "zmq": 1,
        }
    finally:
        pub.close()
        if writer is not None:
            writer.close()


@pytest.mark.parametrize("kind", ["garbage_file", "garbage_message", "wrong_shape"])
def test_a_hostile_slot_never_reaches_the_robot(control, kind: str) -> None:
    """Garbage in the slot file (no slot header), garbage bytes or a wrong-shaped latent in a
    well-formed slot: nothing is taken, the loop stays without a latent (holds), and the bad
    messages are dropped and counted in the control summary."""
    loop, _, run = control
    loop.activate(time.monotonic_ns())
    ep = slot_endpoint(CFG, run)
    cap = topic_limits(CFG)["latent"].max_bytes
    writer = None
    if kind == "garbage_file":
        fd = os.open(slot_path(ep), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, os.urandom(64 + cap))
        os.close(fd)
    else:
        writer = SlotWriter(ep, cap)
    try:
        time.sleep(0.15)  # past the reader's reopen interval
        for i in range(20):
            if kind == "garbage_message":
                writer.write(os.urandom(64 + i))
            elif kind == "wrong_shape":
                bad = Latent(vector=np.zeros(DIM + 1, np.float32))
                writer.write(encode(bad, i + 1, "rogue"))
            _tick(loop, i + 1)
        assert loop.latent_t_ns == -1 and loop.latent_seq == 0
        assert SAFE_NAMES[loop.safe] == "hold"  # no latent: the robot holds its pose
        summary = loop.summary("other", [], time.monotonic_ns())
        assert summary["latent_link"] == {"shm": 0, "zmq": 0}
        dropped = sum(summary["dropped"].values())
        assert dropped == (0 if kind == "garbage_file" else 20)
        if writer is not None:
            assert loop.latent_in.slot.dropped_total == 20
    finally:
        if writer is not None:
            writer.close()
