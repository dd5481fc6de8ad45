"""Allocation-free encoding of the control loop's Command message.

The control process sends one Command every 5 ms. `dualsys.bus.codec.encode` builds a dict,
packs arrays through a Python hook and returns new bytes each time; `CommandEncoder` instead
keeps one preallocated msgpack frame per mode, laid out by msgpack itself with fixed-width
(uint64) header numbers, and writes seq, times, tick, q, dq and the replay fields (scheduled
tick time, input sequence numbers, flags) into it through numpy views.
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
_UINT_BYTES = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}  # msgpack uint 8/16/32/64


def header_seq(buf: bytearray, n: int) -> int:
    """The header sequence number of the raw bus frame buf[:n], read in place (0 when the frame
    does not start like a bus message). Safe in the 200 Hz thread: no copy, no lasting object.
    """
    if n < 4 or buf[0] != 0x97:  # fixarray of 7: [type, version, seq, ...]
        return 0
    b = buf[1]
    if 0xA0 <= b <= 0xBF:  # type as fixstr
        i = 2 + (b & 0x1F)
    elif b == 0xD9:  # type as str8
        i = 3 + buf[2]
    else:
        return 0
    v = 0
    for _ in range(2):  # version, then seq: unsigned msgpack integers
        if i >= n:
            return 0
        b = buf[i]
        if b < 0x80:
            v, i = b, i + 1
            continue
        w = _UINT_BYTES.get(b, 0)
        if w == 0 or i + 1 + w > n:
            return 0
        v = 0
        for j in range(i + 1, i + 1 + w):
            v = (v << 8) | buf[j]
        i += 1 + w
    return v


class _Frame:
    """One preallocated Command frame for one mode."""

    def __init__(self, n: int, source: str, mode: str) -> None:
        qm = np.full(n, 1.2345e300, np.float64)
        dm = np.full(n, -6.789e300, np.float64)
        body = {
            "tick": _MARK + 4,
            "q": _pack_array(qm),
            "dq": _pack_array(dm),
            "mode": mode,
            "t_ns": _MARK + 5,
            "state_seq": _MARK + 6,
            "latent_seq": _MARK + 7,
            "chunk_seq": _MARK + 8,
            "flags": _MARK + 9,
        }
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
        self.t_ns, self.state_seq, self.latent_seq = u64(5), u64(6), u64(7)
        self.chunk_seq, self.flags = u64(8), u64(9)
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

    def send(
        self,
        q: np.ndarray,
        dq: np.ndarray,
        mode: str,
        tick: int,
        t_ns: int = 0,
        state_seq: int = 0,
        latent_seq: int = 0,
        chunk_seq: int = 0,
        flags: int = 0,
    ) -> bool:
        """Send one Command; returns False (and counts it) when ZeroMQ would block.

        t_ns, *_seq and flags are the replay fields of `Command` (non-negative)."""
        f = self.frames[mode]
        self.seq += 1
        f.seq[0] = self.seq
        f.tick[0] = tick
        f.t_ns[0] = t_ns
        f.state_seq[0] = state_seq
        f.latent_seq[0] = latent_seq
        f.chunk_seq[0] = chunk_seq
        f.flags[0] = flags
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
    Subscriber, so drops are counted per reason as for any other message. The buffer holds the
    Subscriber's largest valid message (its `max_bytes`) unless `max_bytes` is given; a longer
    frame is counted "oversized". `poll` reads at most `max_msgs` frames per call.
    """

    def __init__(self, sub, max_bytes: int | None = None, max_msgs: int = 64) -> None:
        self.sub = sub
        self.max_msgs = max_msgs
        self.buf = bytearray(sub.max_bytes if max_bytes is None else max_bytes)
        self.view = memoryview(self.buf)
        self.n = 0
        self.count = 0
        self.t_ns = -1
        self.seq = 0  # header seq of the newest frame (0: none, or not a bus message)

    def poll(self) -> bool:
        """Receive everything waiting, keep the newest. True when a new frame arrived."""
        sock = self.sub.sock
        got = False
        for _ in range(self.max_msgs):
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                break
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
            self.seq = header_seq(self.buf, self.n)
        return got

    def decode(self):
        """Validate and decode the newest frame (None if none or dropped). Allocates."""
        if self.n == 0:
            return None
        return self.sub._accept(bytes(self.view[: self.n]))
