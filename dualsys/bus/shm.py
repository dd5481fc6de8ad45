"""A latest-value slot in shared memory: the same-machine fast path of a bus link.

ZeroMQ over ipc:// moves a message through three threads (the sender's I/O thread, the
receiver's I/O thread, then the receiving thread), each a wake-up; on a VM whose idle vCPUs
halt, each wake-up can cost 100+ us (benchmarks/results/bus.md). A slot skips all of them: the
publisher writes the encoded msgpack message into a file mapping and a reader sees it at once;
a reader that waits is woken directly by the kernel (a futex on the sequence word).

Layout of the file (`shm://<path>`, owner-only, in the run directory):

    0  magic "DSYSLOT1"   8  capacity (bytes)   16 seq (odd while a write is in progress)
    24 length (bytes)     32 retired (set when a publisher replaced this file)   64 data

The sequence word is a seqlock: the writer makes it odd, writes length and data, makes it even;
a reader copies the data into its own preallocated buffer and keeps the copy only when the
sequence was even and unchanged across the copy, so it never decodes a torn write. The bytes
are decoded and validated exactly like a ZeroMQ message (dualsys.bus.codec): garbage, wrong
lengths and held-odd sequences written by anyone else are dropped and counted, never decoded.
The ordering of plain stores relies on x86-64 (total store order); other machines are refused.
The file is owner-only in an owner-only directory, so only the same user can write it; such a
process could also crash a reader by truncating the mapped file (SIGBUS), as it could kill it.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import time
from pathlib import Path

import numpy as np

MAGIC = int.from_bytes(b"DSYSLOT1", "little")
HEADER = 64
_MAGIC, _CAP, _SEQ, _LEN, _RETIRED = range(5)  # u64 words of the header
#: byte offsets of the header words, for compiled readers (dualsys.system1.tick)
OFF_CAP, OFF_SEQ, OFF_LEN, OFF_RETIRED = 8 * _CAP, 8 * _SEQ, 8 * _LEN, 8 * _RETIRED
#: reads of a slot that is being written before a reader gives up (counted as "torn")
TORN_RETRIES = 3
_SYS_FUTEX = 202  # x86-64
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1  # not FUTEX_PRIVATE: the word is shared between processes
_INT_MAX = 2**31 - 1


class SlotError(RuntimeError):
    """A slot file cannot be used (wrong machine, wrong magic, wrong size); says which file."""


def _check_machine() -> None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SlotError(
            f"shm:// links need Linux on x86-64 (futex, store order); this is "
            f"{platform.system()} {platform.machine()}: use ipc://"
        )


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def slot_path(endpoint: str) -> Path:
    """The file of a shm:// endpoint."""
    if not endpoint.startswith("shm://"):
        raise ValueError(f"not a shm:// endpoint: {endpoint!r}")
    return Path(endpoint[len("shm://") :])


class _Mapping:
    """One mapped slot file: header words, data bytes and the futex address."""

    def __init__(self, fd: int, size: int, path: Path) -> None:
        self.path = path
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = memoryview(self.mm)
        # native u64 items: each read or write is one aligned 8-byte access, a Python int
        self.words = self._view[:HEADER].cast("Q")
        self.data = self._view[HEADER:]
        self._anchor = ctypes.c_char.from_buffer(self.mm, 8 * _SEQ)  # keeps the address valid
        self.seq_addr = ctypes.addressof(self._anchor)

    def wake(self) -> None:
        """Wake every reader waiting on the sequence word (a few us without waiters)."""
        _syscall(_SYS_FUTEX, ctypes.c_void_p(self.seq_addr), _FUTEX_WAKE, _INT_MAX, None, None, 0)

    def wait(self, seq: int, timeout_s: float) -> None:
        """Sleep until the sequence word is no longer `seq` or the timeout passes."""
        ts = _Timespec(int(timeout_s), int((timeout_s % 1) * 1e9))
        low = ctypes.c_uint32(seq & 0xFFFFFFFF).value
        _syscall(
            _SYS_FUTEX, ctypes.c_void_p(self.seq_addr), _FUTEX_WAIT, low, ctypes.byref(ts), None, 0
        )

    def close(self) -> None:
        self.words.release()
        self.data.release()
        self._view.release()
        del self._anchor
        self.mm.close()


class SlotWriter:
    """The publishing side of a slot: creates (or reuses) the file, writes each message whole.

    `write` never blocks and allocates nothing beyond the message: safe in the 200 Hz thread."""

    def __init__(self, endpoint: str, capacity: int) -> None:
        _check_machine()
        if capacity <= 0:
            raise ValueError(f"{endpoint}: slot capacity must be positive, got {capacity}")
        self.path = slot_path(endpoint)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.capacity = capacity
        self._map = self._open_or_create()

    def _open_or_create(self) -> _Mapping:
        size = HEADER + self.capacity
        if self.path.exists():  # reuse: readers already mapped to it keep working
            old = _open_existing(self.path)
            if old is not None and old.words[_CAP] == self.capacity:
                old.words[_RETIRED] = 0
                return old
            if old is not None:  # another size: tell its readers to reopen, then replace it
                old.words[_RETIRED] = 1
                old.wake()
                old.close()
            self.path.unlink()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            m = _Mapping(fd, size, self.path)
        finally:
            os.close(fd)
        m.words[_CAP] = self.capacity
        m.words[_MAGIC] = MAGIC  # last: a reader never trusts a half-made header
        return m

    def write(self, data: bytes) -> bool:
        """Publish one encoded message; False (nothing written) when it exceeds the capacity."""
        n = len(data)
        if n > self.capacity:
            return False
        m = self._map
        w = m.words
        seq = w[_SEQ] | 1  # odd: a write is in progress
        w[_SEQ] = seq
        w[_LEN] = n
        m.data[:n] = data
        w[_SEQ] = seq + 1
        m.wake()
        return True

    def close(self) -> None:
        """Unmap (the file stays: readers keep the last value, a restarted publisher reuses it)."""
        self._map.close()


def _open_existing(path: Path) -> _Mapping | None:
    """Map an existing slot file, or None when it is not a usable slot (wrong size/magic)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < HEADER:
            return None
        m = _Mapping(fd, size, path)
    finally:
        os.close(fd)
    if m.words[_MAGIC] != MAGIC or m.words[_CAP] > size - HEADER:
        m.close()
        return None
    return m


class SlotReader:
    """The receiving side of a slot: copies the newest complete message into its own buffer.

    `read` never blocks and allocates nothing once the slot is open (the copy goes into a
    buffer made at construction): safe in the 200 Hz thread. Before the publisher has made the
    file, `read` retries opening it at most every `reopen_s`."""

    def __init__(self, endpoint: str, max_bytes: int, reopen_s: float = 0.1) -> None:
        _check_machine()
        self.path = slot_path(endpoint)
        self.max_bytes = max_bytes
        self.buf = bytearray(max_bytes)
        self.view = memoryview(self.buf)
        self.arr = np.frombuffer(self.buf, np.uint8)  # the same buffer, for compiled readers
        self.reopen_ns = int(reopen_s * 1e9)
        self._next_open_ns = 0
        self._map: _Mapping | None = None
        self._seen = 0  # sequence of the last message taken (or refused)
        self.torn = 0  # reads that found a write in progress TORN_RETRIES times

    def _mapping(self) -> _Mapping | None:
        m = self._map
        if m is not None and not m.words[_RETIRED]:
            return m
        now = time.monotonic_ns()
        if now < self._next_open_ns:
            return None
        self._next_open_ns = now + self.reopen_ns
        if m is not None:
            m.close()
            self._map = None
        self._map = _open_existing(self.path)
        self._seen = 0
        return self._map

    def read(self) -> memoryview | int | None:
        """The newest message not yet read, as a view of this reader's buffer (valid until the
        next read); an int (its length) when it is larger than max_bytes or the slot's capacity;
        None when there is nothing new or the writer held the slot through every retry."""
        m = self._mapping()
        if m is None:
            return None
        w = m.words
        for _ in range(TORN_RETRIES):
            s1 = w[_SEQ]
            if s1 == self._seen:
                return None
            if s1 & 1:
                continue
            n = w[_LEN]
            if n > self.max_bytes or n > w[_CAP]:
                if w[_SEQ] != s1:
                    continue
                self._seen = s1
                return n
            self.view[:n] = m.data[:n]
            if w[_SEQ] == s1:  # unchanged across the copy: not torn
                self._seen = s1
                return self.view[:n]
        self.torn += 1
        return None

    def mark_seen(self, seq: int) -> None:
        """Record that compiled code took the message of sequence seq (see `probe`)."""
        self._seen = seq

    def probe(self) -> tuple[int, int, int]:
        """(address of the mapped seq word or 0 when unmapped, seq of the last message taken,
        monotonic ns of the next open attempt): enough for compiled code to tell, without a
        call, whether `read` has something new (the seq word moved or the retired word, 16
        bytes after it, is set) or should retry opening."""
        m = self._map
        return (0 if m is None else m.seq_addr), self._seen, self._next_open_ns

    def wait(self, timeout_s: float) -> None:
        """Sleep until the slot changes past the last message read, or timeout_s passes (not
        for the 200 Hz thread). Without the file yet, sleeps up to reopen_s."""
        m = self._mapping()
        if m is None:
            time.sleep(min(timeout_s, self.reopen_ns / 1e9))
            return
        seq = m.words[_SEQ]
        if seq == self._seen or seq & 1:
            m.wait(seq, timeout_s)

    def close(self) -> None:
        """Unmap the slot."""
        if self._map is not None:
            self._map.close()
            self._map = None
