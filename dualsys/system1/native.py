"""The C calls of the compiled tick: libc clocks and sleeps, libzmq's socket API, from numba.

The control tick runs in nopython mode (dualsys.system1.tick), where a Python call would box
its arguments and results. These functions call libc's clock_gettime/clock_nanosleep and the
very libzmq that pyzmq loaded (same library, same socket objects: a pyzmq socket's
`underlying` is the `void *` libzmq hands out) directly, as external symbols: no Python object
is made, and the compiled code is cached on disk like the rest of dualsys's kernels.

Every function takes a preallocated int64 scratch array `io` (IO_WORDS long) for the
out-parameters (timespec, option values), so a call allocates nothing. Pointers travel as
uint64 addresses (`array.ctypes.data`, `socket.underlying`).
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import zmq
from numba import njit, types

CLOCK_REALTIME, CLOCK_MONOTONIC, TIMER_ABSTIME = 0, 1, 1
EINTR = 4
ZMQ_EVENTS, ZMQ_POLLIN, ZMQ_DONTWAIT = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.DONTWAIT)
#: words of the scratch array: timespec (2), option value (1), option length (1)
IO_WORDS = 4
_TS, _OPT, _OPTLEN = 0, 2, 3


def libzmq_path() -> str:
    """The file holding the libzmq this process uses through pyzmq: the shared libzmq it
    loaded (from /proc/self/maps), else pyzmq's backend extension (a libzmq linked into it)."""
    import zmq.backend.cython._zmq as backend

    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and "libzmq" in parts[-1].rsplit("/", 1)[-1]:
                return parts[-1]
    return backend.__file__


def _load_libzmq() -> None:
    """Make libzmq's symbols resolvable by compiled code (the same loaded library, the same
    socket objects as pyzmq's)."""
    path = libzmq_path()
    llvm.load_library_permanently(path)
    if not llvm.address_of_symbol("zmq_send"):
        raise RuntimeError(
            f"dualsys.system1.native: no zmq_send in {path}: the compiled control tick needs "
            "a pyzmq whose libzmq exports its C API (a shared libzmq, as pyzmq's wheels have)"
        )


_load_libzmq()
_u64, _i32 = types.uint64, types.int32
_clock_gettime = types.ExternalFunction("clock_gettime", _i32(_i32, _u64))
_clock_nanosleep = types.ExternalFunction("clock_nanosleep", _i32(_i32, _i32, _u64, _u64))
_zmq_getsockopt = types.ExternalFunction("zmq_getsockopt", _i32(_u64, _i32, _u64, _u64))
_zmq_recv = types.ExternalFunction("zmq_recv", _i32(_u64, _u64, _u64, _i32))
_zmq_send = types.ExternalFunction("zmq_send", _i32(_u64, _u64, _u64, _i32))
_memcpy = types.ExternalFunction("memcpy", _u64(_u64, _u64, _u64))


def scratch() -> np.ndarray:
    """A scratch array for the calls below (one per thread)."""
    return np.zeros(IO_WORDS, np.int64)


@njit(cache=True, nogil=True)
def now_ns(io):  # pragma: no cover - compiled
    """CLOCK_MONOTONIC in ns (`time.monotonic_ns`'s clock)."""
    _clock_gettime(CLOCK_MONOTONIC, io.ctypes.data)
    return io[_TS] * 1_000_000_000 + io[_TS + 1]


@njit(cache=True, nogil=True)
def wall_ns(io):  # pragma: no cover - compiled
    """CLOCK_REALTIME in ns (`time.time_ns`'s clock)."""
    _clock_gettime(CLOCK_REALTIME, io.ctypes.data)
    return io[_TS] * 1_000_000_000 + io[_TS + 1]


@njit(cache=True, nogil=True)
def sleep_abs(t_ns, io):  # pragma: no cover - compiled
    """Sleep until monotonic t_ns (at once if passed); returns 0, or EINTR when a signal came
    (its Python handler runs only once the caller is back in Python)."""
    io[_TS] = t_ns // 1_000_000_000
    io[_TS + 1] = t_ns % 1_000_000_000
    return _clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, io.ctypes.data, 0)


@njit(cache=True, nogil=True)
def readable(sock, io):  # pragma: no cover - compiled
    """Whether a message waits on the libzmq socket at address sock (ZMQ_EVENTS & POLLIN)."""
    io[_OPT] = 0
    io[_OPTLEN] = 4  # ZMQ_EVENTS is an int
    if _zmq_getsockopt(sock, ZMQ_EVENTS, io.ctypes.data + 8 * _OPT, io.ctypes.data + 8 * _OPTLEN):
        return False
    return (io[_OPT] & 0xFFFFFFFF & ZMQ_POLLIN) != 0


@njit(cache=True, nogil=True)
def recv_into(sock, buf):  # pragma: no cover - compiled
    """Receive one message into the uint8 array buf without waiting: its full length (longer
    than buf: truncated), or -1 when none waits."""
    return _zmq_recv(sock, buf.ctypes.data, buf.shape[0], ZMQ_DONTWAIT)


@njit(cache=True, nogil=True)
def send(sock, buf, n):  # pragma: no cover - compiled
    """Send buf[:n] without waiting (libzmq copies it); False when it would block."""
    return _zmq_send(sock, buf.ctypes.data, n, ZMQ_DONTWAIT) == n


@njit(cache=True, nogil=True)
def copy_from(addr, dst, n):  # pragma: no cover - compiled
    """Copy n bytes from address addr (another process's shared mapping) into the uint8
    array dst (n <= its length)."""
    _memcpy(dst.ctypes.data, addr, n)
