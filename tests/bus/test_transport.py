"""Real ZeroMQ sockets: latest-value topics, bad input dropped and counted, two processes."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from dualsys.bus import Command, Latent, Publisher, RobotState, Subscriber, age_ms
from dualsys.bus.codec import DROP_REASONS


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _wait_connected(pub: Publisher, sub: Subscriber, msg) -> None:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        pub.send(msg)
        if sub.recv(50) is not None:
            return
    raise AssertionError("subscriber never connected")


@pytest.mark.parametrize("scheme", ["ipc", "tcp"])
def test_latest_value_topic_keeps_only_newest(ctx, tmp_path: Path, scheme: str) -> None:
    ep = f"ipc://{tmp_path}/l.sock" if scheme == "ipc" else "tcp://127.0.0.1:0"
    pub = Publisher(ctx, ep, "s2")
    if scheme == "tcp":
        ep = pub.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    sub = Subscriber(ctx, ep, (Latent,), latest=True)
    _wait_connected(pub, sub, Latent(vector=np.zeros(4, np.float32)))
    for i in range(50):
        pub.send(Latent(vector=np.full(4, i, np.float32), step=i))
    time.sleep(0.1)
    msg = sub.recv_latest()
    assert msg is not None and msg.step == 49
    assert sub.recv_latest() is None  # nothing stale queued behind it
    assert age_ms(msg) < 1000
    pub.close()
    sub.close()


def test_ipc_socket_file_is_owner_only(ctx, tmp_path: Path) -> None:
    pub = Publisher(ctx, f"ipc://{tmp_path}/run/x.sock", "t")
    assert (tmp_path / "run" / "x.sock").stat().st_mode & 0o077 == 0
    pub.close()


def test_sequence_gaps_counted(ctx, tmp_path: Path) -> None:
    ep = f"ipc://{tmp_path}/g.sock"
    pub = Publisher(ctx, ep, "src")
    sub = Subscriber(ctx, ep, (Latent,), latest=False)
    _wait_connected(pub, sub, Latent())
    pub.seq += 5  # pretend five messages were lost
    pub.send(Latent())
    assert sub.recv(1000) is not None
    assert sub.gaps == 5


def test_recv_times_out(ctx, tmp_path: Path) -> None:
    sub = Subscriber(ctx, f"ipc://{tmp_path}/none.sock", (Latent,))
    t0 = time.monotonic()
    assert sub.recv(100) is None
    assert time.monotonic() - t0 < 0.5
    assert sub.recv_latest() is None


def _rogue(ep: str, n_each: int) -> None:
    """Another process sending every kind of bad message, then one good one."""
    from tests.bus.test_codec import BAD

    ctx = zmq.Context()
    pub = Publisher(ctx, ep, "rogue", bind=False)
    time.sleep(0.3)
    for _ in range(n_each):
        for data, kwargs in BAD.values():
            if not kwargs:
                pub.send_raw(data)
        pub.send(Latent(vector=np.zeros(512, np.float32)))  # wrong type for a state topic
        pub.send(RobotState(q=np.zeros(3), dq=np.zeros(44), tau=np.zeros(44)))  # wrong shape
        nan = np.full(44, np.nan)
        pub.send(RobotState(q=nan, dq=np.zeros(44), tau=np.zeros(44)))  # NaN
        ints = np.zeros(44, np.int32)
        pub.send(RobotState(q=ints, dq=np.zeros(44), tau=np.zeros(44)))  # wrong dtype
        time.sleep(0.01)
    # Oversized for this receiver: ZeroMQ (MAXMSGSIZE) refuses it and drops this connection
    # before it reaches Python; the publisher reconnects on its own.
    pub.send_raw(b"\x00" * 70_000)
    time.sleep(0.5)
    for _ in range(5):
        pub.send(RobotState(q=np.ones(44), dq=np.zeros(44), tau=np.zeros(44), sim_time=42.0))
        time.sleep(0.05)
    time.sleep(0.3)
    pub.close()
    ctx.term()


def test_bad_messages_from_another_process_dropped_and_counted(ctx, tmp_path: Path) -> None:
    ep = f"ipc://{tmp_path}/state.sock"
    sub = Subscriber(
        ctx,
        ep,
        (RobotState,),
        bind=True,
        latest=False,
        shapes={"state": {"q": (44,), "dq": (44,), "tau": (44,)}},
        max_bytes=65536,
    )
    proc = mp.get_context("spawn").Process(target=_rogue, args=(ep, 5))
    proc.start()
    good = None
    deadline = time.monotonic() + 10
    while good is None and time.monotonic() < deadline:
        good = sub.recv(200)
    proc.join(5)
    assert good is not None and good.sim_time == 42.0  # still serving after the garbage
    assert sub.received >= 1
    for reason in ("malformed", "truncated", "wrong_version", "wrong_type", "bad_field"):
        assert sub.dropped[reason] >= 5, (reason, dict(sub.dropped))
    for reason in ("nonfinite", "wrong_shape"):
        assert sub.dropped[reason] >= 5, (reason, dict(sub.dropped))
    # MAXMSGSIZE makes ZeroMQ itself refuse the oversized frame before it reaches us
    assert set(sub.dropped) <= set(DROP_REASONS)


def test_command_round_trip_two_processes(ctx, tmp_path: Path) -> None:
    ep = f"ipc://{tmp_path}/cmd.sock"
    sub = Subscriber(ctx, ep, (Command,), bind=True, latest=False)
    proc = mp.get_context("spawn").Process(target=_send_commands, args=(ep,))
    proc.start()
    got = []
    deadline = time.monotonic() + 15
    while len(got) < 20 and time.monotonic() < deadline:
        msg = sub.recv(200)
        if msg is not None:
            got.append(msg)
    proc.terminate()
    proc.join(5)
    assert len(got) == 20
    ticks = [m.tick for m in got]
    assert ticks == list(range(ticks[0], ticks[0] + 20))  # in order, none lost
    assert all(m.q.shape == (44,) and m.q[0] == m.tick for m in got)
    assert sub.gaps == 0 and sub.dropped_total == 0


def _send_commands(ep: str) -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, ep, "control", bind=False)
    for i in range(1, 2000):
        pub.send(Command(q=np.full(44, float(i)), dq=np.zeros(44), tick=i))
        time.sleep(0.005)
    pub.close()
    ctx.term()
