"""The compiled tick's C calls: libc clocks and sleep, pyzmq's own libzmq on pyzmq sockets."""

from __future__ import annotations

import time

import numpy as np
import zmq

from dualsys.system1 import native


def test_clocks_are_pythons_clocks_and_the_sleep_is_absolute() -> None:
    io = native.scratch()
    a, b, c = time.monotonic_ns(), native.now_ns(io), time.monotonic_ns()
    assert a <= b <= c
    assert abs(native.wall_ns(io) - time.time_ns()) < 5_000_000
    target = time.monotonic_ns() + 3_000_000
    assert native.sleep_abs(target, io) == 0
    assert time.monotonic_ns() >= target
    t = time.monotonic_ns()
    native.sleep_abs(t - 10**9, io)  # a past time returns at once
    assert time.monotonic_ns() - t < 2_000_000


def test_send_and_receive_on_pyzmq_sockets() -> None:
    """The compiled calls use the sockets pyzmq made: a message sent by one side arrives on the
    other, in both directions, readability follows the queue, a long message is cut to the
    buffer but its length reported."""
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://native")
    b.connect("inproc://native")
    io = native.scratch()
    buf = np.zeros(8, np.uint8)
    try:
        assert not native.readable(b.underlying, io)
        assert native.recv_into(b.underlying, buf) == -1
        msg = np.arange(5, dtype=np.uint8)
        assert native.send(a.underlying, msg, 5)
        assert b.poll(1000) and native.readable(b.underlying, io)
        assert native.recv_into(b.underlying, buf) == 5
        assert list(buf[:5]) == [0, 1, 2, 3, 4]
        b.send(b"0123456789")  # pyzmq sends, the compiled side receives: 10 bytes into 8
        assert a.poll(1000)
        assert native.recv_into(a.underlying, buf) == 10 and bytes(buf) == b"01234567"
        assert not native.readable(a.underlying, io)
    finally:
        a.close(0)
        b.close(0)
        ctx.term()
