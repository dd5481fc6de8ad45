"""Allocation-free encoding of the control loop's Command message.

The control process sends one Command every 5 ms. `dualsys.bus.codec.encode` builds a dict,
packs arrays through a Python hook and returns new bytes each time; `CommandEncoder` instead
keeps one preallocated msgpack frame per mode, laid out by msgpack itself with fixed-width
(uint64) header numbers, and writes seq, times, tick, q and dq into it through numpy views.
The frames are ordinary bus messages: `dualsys.bus.codec.decode` accepts them unchanged.
"""

from __future__ import annotations

import time

import msgpack
import numpy as np
import zmq

from dualsys import SCHEMA_VERSION
from dualsys.bus.codec import _pack_array
from dualsys.bus.messages import Command

_MARK = 2**63  # packs as uint64 (0xcf + 8 bytes): fixed width for any value we write
MODES = ("run", "hold", "damp")


class _Frame:
    """One preallocated Command frame for one mode."""

    def __init__(self, n: int, source: str, mode: str) -> None:
        qm = np.full(n, 1.2345e300, np.float64)
        dm = np.full(n, -6.789e300, np.float64)
        body = {"tick": _MARK + 4, "q": _pack_array(qm), "dq": _pack_array(dm), "mode": mode}
        data = msgpack.packb(
            [Command.TYPE, SCHEMA_VERSION, _MARK + 1, _MARK + 2, _MARK + 3, source, body],
            use_bin_type=True,
        )
        self.buf = bytearray(data)

        def u64(k: int) -> np.ndarray:
            off = data.index(b"\xcf" + (_MARK + k).to_bytes(8, "big")) + 1
            return np.frombuffer(self.buf, dtype=">u8", count=1, offset=off)

        def arr(a: np.ndarray) -> np.ndarray:
            return np.frombuffer(self.buf, dtype="<f8", count=n, offset=data.index(a.tobytes()))

        self.seq, self.mono, self.wall, self.tick = u64(1), u64(2), u64(3), u64(4)
        self.q, self.dq = arr(qm), arr(dm)
        self.q[:] = 0.0
        self.dq[:] = 0.0


class CommandEncoder:
    """Encodes and sends Commands for n joints from preallocated frames.

    `send` is safe in the 200 Hz thread: it copies q and dq into the frame, stamps the header
    and hands the bytes to ZeroMQ (which copies them); no Python object outlives the call.
    """

    def __init__(self, sock: zmq.Socket, n: int, source: str) -> None:
        self.sock = sock
        self.frames = {m: _Frame(n, source, m) for m in MODES}
        self.seq = 0
        self.sent = 0
        self.dropped = 0

    def send(self, q: np.ndarray, dq: np.ndarray, mode: str, tick: int) -> bool:
        """Send one Command; returns False (and counts it) when ZeroMQ would block."""
        f = self.frames[mode]
        self.seq += 1
        f.seq[0] = self.seq
        f.tick[0] = tick
        f.q[:] = q
        f.dq[:] = dq
        f.mono[0] = time.monotonic_ns()
        f.wall[0] = time.time_ns()
        try:
            self.sock.send(f.buf, zmq.NOBLOCK, copy=True)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True


class LatestFrame:
    """Newest raw frame of a latest-value Subscriber, received into a preallocated buffer.

    `poll` is safe in the 200 Hz thread: it checks ZMQ_EVENTS (no exception when empty) and
    drains with `recv_into` (no allocation). `decode` validates the frame through the
    Subscriber, so drops are counted per reason as for any other message.
    """

    def __init__(self, sub, max_bytes: int = 65536) -> None:
        self.sub = sub
        self.buf = bytearray(max_bytes)
        self.view = memoryview(self.buf)
        self.n = 0
        self.count = 0
        self.t_ns = -1

    def poll(self) -> bool:
        """Receive everything waiting, keep the newest. True when a new frame arrived."""
        sock = self.sub.sock
        got = False
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                n = sock.recv_into(self.buf, flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            if n > len(self.buf):
                self.sub.dropped["oversized"] += 1
                continue
            self.n = n
            got = True
        if got:
            self.count += 1
            self.t_ns = time.monotonic_ns()
        return got

    def decode(self):
        """Validate and decode the newest frame (None if none or dropped). Allocates."""
        if self.n == 0:
            return None
        return self.sub._accept(bytes(self.view[: self.n]))
