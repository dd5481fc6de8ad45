"""ZeroMQ publisher / subscriber wrappers for the bus.

- Every socket has LINGER 0 and send/receive timeouts: nothing blocks forever.
- Latest-value topics (latent, state, frames, chunks) use CONFLATE on the subscriber: only the
  newest message is kept, never a queue of stale ones. CONFLATE does not support multipart, so
  every message is one frame.
- Receive calls never raise on bad input: the message is dropped and counted per reason.
- Receive work is bounded: a Subscriber decodes under its topic's `Limits` (ZeroMQ drops
  larger messages before they are read: MAXMSGSIZE), and a non-blocking receive reads at most
  `max_msgs` messages per call, so a flood cannot stall the loop that drains it.
- ipc:// socket files live in an owner-only run directory; tcp:// works the same way.
- shm://<path> is the same-machine latest-value fast path (dualsys/bus/shm.py): the same
  encoded messages and the same validation, through a shared-memory slot instead of a socket
  (no ZeroMQ threads between sender and receiver). `sock` is None on such a link.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zmq

from dualsys.bus.codec import DropError, EncodeError, decode, encode
from dualsys.bus.fastcodec import MessageView
from dualsys.bus.limits import DEFAULT, MAX_BYTES, Limits
from dualsys.bus.messages import Message
from dualsys.bus.shm import SlotReader, SlotWriter

if TYPE_CHECKING:
    from dualsys.bus.curve import CurveConfig

DEFAULT_TIMEOUT_MS = 1000
#: sources whose sequence numbers a subscriber tracks (gap counting); more are not tracked
MAX_SOURCES = 64
#: most messages one non-blocking receive call reads (a CONFLATE socket holds one anyway)
MAX_PER_CALL = 64


def is_shm(endpoint: str) -> bool:
    """Whether the endpoint is a same-machine shared-memory slot (shm://)."""
    return endpoint.startswith("shm://")


def _shm_only_options(endpoint: str, curve: object, latest: bool = True) -> None:
    if curve is not None:
        raise ValueError(f"{endpoint}: CURVE is for off-board links; shm:// is same-machine")
    if not latest:
        raise ValueError(f"{endpoint}: a shm:// link keeps only the newest message (latest=True)")


def prepare_endpoint(endpoint: str) -> None:
    """For ipc:// endpoints, create the socket's directory owner-only and remove a stale file."""
    if endpoint.startswith("ipc://"):
        path = Path(endpoint[len("ipc://") :])
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists():
            path.unlink()


def _configure(sock: zmq.Socket, timeout_ms: int) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)


def _attach(sock: zmq.Socket, endpoint: str, bind: bool) -> None:
    if bind:
        prepare_endpoint(endpoint)
        sock.bind(endpoint)
        if endpoint.startswith("ipc://"):
            os.chmod(endpoint[len("ipc://") :], 0o600)
    else:
        sock.connect(endpoint)


def _secure(sock: zmq.Socket, curve: CurveConfig, bind: bool) -> None:
    try:
        curve.apply(sock, bind=bind)
    except Exception:
        sock.close(0)  # an unclosed socket would block ctx.term() forever
        raise


class Publisher:
    """Publishes messages of any type on one endpoint (one topic per endpoint).

    `send` never blocks: when the peer's queue is full (or, on shm://, the message exceeds
    `max_bytes`) the message is dropped and counted in `send_dropped`. Safe to call from the
    200 Hz thread (one msgpack pack, one zmq send or one copy into the slot).
    """

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        source: str,
        *,
        bind: bool = True,
        hwm: int = 64,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        curve: CurveConfig | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.endpoint, self.source = endpoint, source
        self.seq = 0
        self.sent = 0
        self.send_dropped = 0
        self.slot: SlotWriter | None = None
        self.sock: zmq.Socket | None = None
        if is_shm(endpoint):
            _shm_only_options(endpoint, curve)
            self.slot = SlotWriter(endpoint, max_bytes)
            return
        self.sock = ctx.socket(zmq.PUB)
        _configure(self.sock, timeout_ms)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        if curve is not None:  # off-board link: ZeroMQ CURVE (dualsys/bus/curve.py)
            _secure(self.sock, curve, bind)
        _attach(self.sock, endpoint, bind)

    def send(self, msg: Message, t_mono_ns: int | None = None) -> bool:
        """Encode and send without blocking. Returns False when the message was dropped."""
        self.seq += 1
        data = encode(msg, self.seq, self.source, t_mono_ns)
        if not self._put(data):
            self.send_dropped += 1
            return False
        self.sent += 1
        return True

    def _put(self, data: bytes) -> bool:
        if self.slot is not None:
            return self.slot.write(data)
        try:
            self.sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def send_raw(self, data: bytes) -> None:
        """Send pre-encoded bytes (tests and fault injection)."""
        if not self._put(data):
            self.send_dropped += 1

    def close(self) -> None:
        """Close the socket (LINGER 0: pending messages are discarded) or unmap the slot."""
        if self.slot is not None:
            self.slot.close()
        else:
            self.sock.close(0)


class Subscriber:
    """Receives one topic; validates every message; counts drops per reason and sequence gaps.

    latest=True sets CONFLATE (only the newest message is kept). `recv_latest` and
    `recv_nowait` never block and read at most `max_msgs` messages (valid or not) per call:
    usable from the 200 Hz thread. `limits` bound what one message may be and allocate
    (`dualsys.bus.limits.receive_spec(cfg, topic)` gives them with the shapes for a robot);
    `max_bytes`, when given, overrides limits.max_bytes. On a shm:// endpoint the subscriber
    reads the publisher's slot (latest=True only, no CURVE); `sock` is then None.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        accept: tuple[type[Message], ...],
        *,
        bind: bool = False,
        latest: bool = True,
        shapes: dict[str, dict[str, tuple[int, ...]]] | None = None,
        limits: Limits | None = None,
        max_bytes: int | None = None,
        hwm: int = 1000,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        curve: CurveConfig | None = None,
    ) -> None:
        self.limits = limits or DEFAULT
        self.max_bytes = self.limits.max_bytes if max_bytes is None else max_bytes
        self.endpoint, self.accept, self.shapes = endpoint, accept, shapes
        self.received = 0
        self.dropped: Counter[str] = Counter()
        self.gaps = 0
        self.last_error = ""
        self._last_seq: dict[str, int] = {}
        self.untracked_sources = 0  # messages from sources beyond MAX_SOURCES (not seq-tracked)
        self.last: Message | None = None
        self.slot: SlotReader | None = None
        self.sock: zmq.Socket | None = None
        if is_shm(endpoint):
            _shm_only_options(endpoint, curve, latest)
            self.slot = SlotReader(endpoint, self.max_bytes)
            return
        self.sock = ctx.socket(zmq.SUB)
        _configure(self.sock, timeout_ms)
        if latest:
            self.sock.setsockopt(zmq.CONFLATE, 1)
        else:
            self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        if curve is not None:  # off-board link: ZeroMQ CURVE (dualsys/bus/curve.py)
            _secure(self.sock, curve, bind)
        _attach(self.sock, endpoint, bind)

    def _decode(self, data: bytes | memoryview) -> Message | None:
        """The codec's verdict on data: the message, or None with the drop counted."""
        try:
            return decode(data, self.accept, self.shapes, self.max_bytes, self.limits)
        except DropError as exc:
            self.dropped[exc.reason] += 1
            self.last_error = str(exc)
            return None

    def _accept(self, data: bytes | memoryview) -> Message | None:
        msg = self._decode(data)
        if msg is not None:
            self._count(msg.header.source, msg.header.seq)
            self.last = msg
        return msg

    def _count(self, source: str, seq: int) -> None:
        """Count a received message and its sequence gap from the same source."""
        prev = self._last_seq.get(source)
        if prev is not None and seq > prev + 1:
            self.gaps += seq - prev - 1
        if prev is not None or len(self._last_seq) < MAX_SOURCES:
            self._last_seq[source] = seq
        else:  # a link has a few senders: a flood of made-up source names is not tracked
            self.untracked_sources += 1
        self.received += 1

    def add_taken(self, view: MessageView, n: int, gaps: int) -> None:
        """Count n messages that compiled code took into view from this link, all from the
        source of the one stored (dualsys.system1.tick), with `gaps` sequence gaps."""
        self.received += n
        self.gaps += gaps
        if view.source in self._last_seq:
            self._last_seq[view.source] = view.seq

    def view(self, cls: type[Message], array_field: str | None = None) -> MessageView:
        """A `MessageView` of cls under this subscriber's shapes and size limits, for `take`."""
        shapes = (self.shapes or {}).get(cls.TYPE)
        lim = dataclasses.replace(self.limits, max_bytes=self.max_bytes)
        return MessageView(cls, shapes, lim, array_field)

    def take(self, view: MessageView) -> bool:
        """Store the newest valid message waiting into view (never blocks; reads at most
        MAX_PER_CALL messages, as `recv_latest`); True when a new one was stored. Validation
        is compiled (dualsys.bus.fastcodec) and no message object is made; what it leaves to
        the codec is decoded, dropped and counted as by `recv_latest`. `last` is not set.
        Safe in the 200 Hz thread."""
        if self.slot is not None:
            data = self._slot_bytes()
            return data is not None and self.take_bytes(view, self.slot.arr, len(data))
        got = False
        for data in self._waiting(MAX_PER_CALL):
            got = self.take_bytes(view, np.frombuffer(data, np.uint8), len(data)) or got
        return got

    def _waiting(self, max_msgs: int) -> Iterator[bytes]:
        """The messages waiting on the socket, at most max_msgs (never blocks)."""
        for _ in range(max_msgs):
            try:
                yield self.sock.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return

    def take_bytes(self, view: MessageView, buf: np.ndarray, n: int) -> bool:
        """Store the message buf[:n] into view when valid (see `take`); counts it or its
        drop. True when stored."""
        if view.take(buf, n):
            self._count(view.source, view.seq)
            return True
        msg = self._decode(buf[:n].tobytes())  # the codec decides: accepted, or dropped
        if msg is None or not isinstance(msg, view.cls):
            return False
        if not view.fill(msg):
            self.dropped["out_of_range"] += 1
            self.last_error = f"out_of_range: {view.cls.TYPE} array beyond float32"
            return False
        self._count(msg.header.source, msg.header.seq)
        return True

    def recv_latest(self, max_msgs: int = MAX_PER_CALL) -> Message | None:
        """Read up to max_msgs waiting messages (never blocks); the newest valid one, or None.

        Safe in the 200 Hz thread: bounded work whatever a peer sends."""
        if self.slot is not None:
            return self._read_slot()
        newest = None
        for data in self._waiting(max_msgs):
            msg = self._accept(data)
            if msg is not None:
                newest = msg
        return newest

    def recv_nowait(self, max_msgs: int = MAX_PER_CALL) -> Message | None:
        """The next waiting valid message in order, reading at most max_msgs messages (bad ones
        dropped and counted); None when none is valid among them. Never blocks. On shm:// the
        newest message (a slot holds one)."""
        if self.slot is not None:
            return self._read_slot()
        for data in self._waiting(max_msgs):
            msg = self._accept(data)
            if msg is not None:
                return msg
        return None

    def recv(self, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Message | None:
        """Wait up to timeout_ms for the next valid message (bad ones are dropped and counted)."""
        deadline = time.monotonic() + timeout_ms / 1000
        if self.slot is not None:
            return self._wait_slot(deadline)
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left < 0 or not self.sock.poll(max(left, 0)):
                return None
            try:
                data = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                continue
            msg = self._accept(data)
            if msg is not None:
                return msg

    def _slot_bytes(self) -> memoryview | None:
        """The slot's newest message when new (its bytes in the reader's buffer); torn and
        oversized reads are counted and give None."""
        torn = self.slot.torn
        data = self.slot.read()
        if self.slot.torn != torn:
            self.dropped["torn"] += 1
            self.last_error = "torn: the slot was being written through every retry"
        if isinstance(data, int):
            self.dropped["oversized"] += 1
            self.last_error = f"oversized: {data} bytes > {self.max_bytes}"
            return None
        return data

    def _read_slot(self) -> Message | None:
        """The slot's newest message when new and valid (bounded, never blocks)."""
        data = self._slot_bytes()
        return None if data is None else self._accept(data)

    def _wait_slot(self, deadline: float) -> Message | None:
        while True:
            msg = self._read_slot()
            if msg is not None:
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.slot.wait(left)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def close(self) -> None:
        """Close the socket or unmap the slot."""
        if self.slot is not None:
            self.slot.close()
        else:
            self.sock.close(0)


def age_ms(msg: Message, now_mono_ns: int | None = None) -> float:
    """Age of a message in ms on this machine's monotonic clock (same-host links)."""
    now = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
    return (now - msg.header.t_mono_ns) / 1e6


__all__ = ["Publisher", "Subscriber", "EncodeError", "age_ms", "is_shm", "prepare_endpoint"]
