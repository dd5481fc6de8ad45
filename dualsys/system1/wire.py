"""Allocation-free encoding of the control loop's Command message, and raw state frames.

The control process sends one Command every 5 ms. `dualsys.bus.codec.encode` builds a dict,
packs arrays through a Python hook and returns new bytes each time; `CommandEncoder` instead
keeps one preallocated msgpack frame per mode, laid out by msgpack itself with fixed-width
(uint64) header numbers, and `send_command` (compiled) writes seq, times, tick, q, dq and the
replay fields (scheduled tick time, input sequence numbers, flags) into it at their offsets
and hands it to libzmq. The frames are ordinary bus messages: `dualsys.bus.codec.decode`
accepts them unchanged. `poll_latest` (compiled) receives a latest-value link's raw frames
into a preallocated buffer. Both run inside the compiled tick (dualsys.system1.tick) and
behind the Python methods below, one implementation for both.
"""

from __future__ import annotations

import msgpack
import numpy as np
import zmq
from numba import njit

from dualsys import SCHEMA_VERSION
from dualsys.bus.codec import _pack_array
from dualsys.bus.messages import Command
from dualsys.system1.native import now_ns, readable, recv_into, scratch, send, wall_ns

_MARK = 2**63  # packs as uint64 (0xcf + 8 bytes): fixed width for any value we write
MODES = ("run", "hold", "damp")
MODE_INDEX = {m: i for i, m in enumerate(MODES)}
#: columns of `CommandEncoder.offs`: byte offsets of the header and body fields in a frame
F_SEQ, F_MONO, F_WALL, F_TICK, F_T_NS, F_STATE_SEQ, F_LATENT_SEQ, F_CHUNK_SEQ, F_FLAGS = range(9)
F_Q, F_DQ = 9, 10
N_FIELDS = 11
#: `CommandEncoder.ctr`: commands numbered (header seq), sent, dropped (ZeroMQ would block)
C_SEQ, C_SENT, C_DROPPED = range(3)
#: `LatestFrame.meta`: length of the newest frame, frames taken, time taken, its header seq,
#: frames over the buffer
M_N, M_COUNT, M_T, M_SEQ, M_OVERSIZED = range(5)


@njit(cache=True, nogil=True)
def header_seq(buf, n):  # pragma: no cover - compiled
    """The header sequence number of the raw bus frame buf[:n] (uint8 array or bytearray),
    read in place (0 when the frame does not start like a bus message)."""
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
        if b < 0xCC or b > 0xCF:  # uint 8/16/32/64: 1, 2, 4, 8 bytes
            return 0
        w = 1 << (b - 0xCC)
        if i + 1 + w > n:
            return 0
        v = 0
        for j in range(i + 1, i + 1 + w):
            v = (v << 8) | buf[j]
        i += 1 + w
    return v


@njit(cache=True, nogil=True)
def _put_u64(buf, off, v):  # pragma: no cover - compiled
    for j in range(8):  # msgpack numbers are big-endian
        buf[off + j] = (v >> (56 - 8 * j)) & 0xFF


@njit(cache=True, nogil=True)
def write_q(buf, off, q, dq):  # pragma: no cover - compiled
    """Write q and dq (float64, little-endian as the bus packs arrays) into a frame."""
    n = q.shape[0]
    qb, db = q.view(np.uint8), dq.view(np.uint8)
    for j in range(8 * n):
        buf[off[F_Q] + j] = qb[j]
        buf[off[F_DQ] + j] = db[j]


@njit(cache=True, nogil=True)
def send_command(sock, bufs, lens, offs, ctr, m, q, dq, tick, t_ns, state_seq, latent_seq,
                 chunk_seq, flags, io):  # fmt: skip  # pragma: no cover - compiled
    """Fill frame m (`MODES`) and send it on the libzmq socket at address sock; False (and
    counted in ctr) when ZeroMQ would block. Allocation-free; safe in the 200 Hz thread."""
    buf, off = bufs[m], offs[m]
    ctr[C_SEQ] += 1
    _put_u64(buf, off[F_SEQ], ctr[C_SEQ])
    _put_u64(buf, off[F_TICK], tick)
    _put_u64(buf, off[F_T_NS], t_ns)
    _put_u64(buf, off[F_STATE_SEQ], state_seq)
    _put_u64(buf, off[F_LATENT_SEQ], latent_seq)
    _put_u64(buf, off[F_CHUNK_SEQ], chunk_seq)
    _put_u64(buf, off[F_FLAGS], flags)
    write_q(buf, off, q, dq)
    _put_u64(buf, off[F_MONO], now_ns(io))
    _put_u64(buf, off[F_WALL], wall_ns(io))
    if send(sock, buf, lens[m]):
        ctr[C_SENT] += 1
        return True
    ctr[C_DROPPED] += 1
    return False


def _layout(n: int, source: str, mode: str) -> tuple[bytes, np.ndarray]:
    """One mode's Command frame, laid out by msgpack, and its field offsets (F_*)."""
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
    off = np.zeros(N_FIELDS, np.int64)
    for k in range(9):
        off[k] = data.index(b"\xcf" + (_MARK + k + 1).to_bytes(8, "big")) + 1
    off[F_Q], off[F_DQ] = data.index(qm.tobytes()), data.index(dm.tobytes())
    return data, off


class CommandEncoder:
    """Encodes and sends Commands for n joints from preallocated frames.

    `send` is safe in the 200 Hz thread: one compiled call (`send_command`) copies q and dq
    into the frame, stamps the header and hands the bytes to libzmq (which copies them); no
    Python object outlives the call. `bufs`, `lens`, `offs` and `ctr` are the arrays the
    compiled tick passes to `send_command` itself.
    """

    def __init__(self, sock: zmq.Socket, n: int, source: str) -> None:
        self.sock = sock
        self.addr = sock.underlying
        frames = [_layout(n, source, m) for m in MODES]
        self.bufs = np.zeros((len(MODES), max(len(d) for d, _ in frames)), np.uint8)
        self.lens = np.array([len(d) for d, _ in frames], np.int64)
        self.offs = np.stack([off for _, off in frames])
        for m, (data, off) in enumerate(frames):
            self.bufs[m, : len(data)] = np.frombuffer(data, np.uint8)
            write_q(self.bufs[m], off, np.zeros(n), np.zeros(n))
        self.ctr = np.zeros(3, np.int64)
        self.io = scratch()

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
        return send_command(
            self.addr, self.bufs, self.lens, self.offs, self.ctr, MODE_INDEX[mode],
            np.ascontiguousarray(q, np.float64), np.ascontiguousarray(dq, np.float64),
            tick, t_ns, state_seq, latent_seq, chunk_seq, flags, self.io,
        )  # fmt: skip

    def frame(self, mode: str) -> bytes:
        """The current bytes of one mode's frame (tests, tools)."""
        m = MODE_INDEX[mode]
        return self.bufs[m, : self.lens[m]].tobytes()

    @property
    def seq(self) -> int:
        return int(self.ctr[C_SEQ])

    @property
    def sent(self) -> int:
        return int(self.ctr[C_SENT])

    @property
    def dropped(self) -> int:
        return int(self.ctr[C_DROPPED])


@njit(cache=True, nogil=True)
def poll_latest(sock, buf, max_msgs, meta, io):  # pragma: no cover - compiled
    """Receive up to max_msgs waiting frames into buf, keeping the newest (see LatestFrame);
    True when a new frame arrived. Allocation-free; safe in the 200 Hz thread."""
    got = False
    for _ in range(max_msgs):
        if not readable(sock, io):
            break
        n = recv_into(sock, buf)
        if n < 0:
            break
        if n > buf.shape[0]:
            meta[M_OVERSIZED] += 1
            continue
        meta[M_N] = n
        got = True
    if got:
        meta[M_COUNT] += 1
        meta[M_T] = now_ns(io)
        meta[M_SEQ] = header_seq(buf, meta[M_N])
    return got


class LatestFrame:
    """Newest raw frame of a latest-value Subscriber, received into a preallocated buffer.

    `poll` is safe in the 200 Hz thread: one compiled call (`poll_latest`: ZMQ_EVENTS, then
    zmq_recv into the buffer; no allocation). `decode` validates the frame through the
    Subscriber, so drops are counted per reason as for any other message. The buffer holds the
    Subscriber's largest valid message (its `max_bytes`) unless `max_bytes` is given; a longer
    frame is counted "oversized". `poll` reads at most `max_msgs` frames per call. The frame's
    length, count, time and header seq live in `meta` (M_*), which the compiled tick updates.
    """

    def __init__(self, sub, max_bytes: int | None = None, max_msgs: int = 64) -> None:
        self.sub = sub
        self.addr = sub.sock.underlying
        self.max_msgs = max_msgs
        self.buf = np.zeros(sub.max_bytes if max_bytes is None else max_bytes, np.uint8)
        self.meta = np.zeros(5, np.int64)
        self.meta[M_T] = -1
        self.io = scratch()
        self._oversized = 0

    def poll(self) -> bool:
        """Receive everything waiting, keep the newest. True when a new frame arrived."""
        got = poll_latest(self.addr, self.buf, self.max_msgs, self.meta, self.io)
        self.count_drops()
        return got

    def count_drops(self) -> None:
        """Move frames found oversized (by `poll` or the compiled tick) into the Subscriber's
        drop counts."""
        new = int(self.meta[M_OVERSIZED]) - self._oversized
        if new:
            self.sub.dropped["oversized"] += new
            self._oversized += new

    def put(self, data: bytes) -> None:
        """Place a frame as if received (the loop's warm-up)."""
        self.buf[: len(data)] = np.frombuffer(data, np.uint8)
        self.n = len(data)

    def decode(self):
        """Validate and decode the newest frame (None if none or dropped). Allocates."""
        if self.n == 0:
            return None
        return self.sub._accept(self.buf[: self.n].tobytes())

    def _get(i: int) -> property:  # noqa: N805 - a property factory for the meta words
        def get(self) -> int:
            return int(self.meta[i])

        def set_(self, value: int) -> None:
            self.meta[i] = value

        return property(get, set_)

    n = _get(M_N)
    count = _get(M_COUNT)
    t_ns = _get(M_T)
    seq = _get(M_SEQ)  # header seq of the newest frame (0: none, or not a bus message)
    del _get
