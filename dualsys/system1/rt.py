"""Real-time set-up of a process: core pinning, SCHED_FIFO, mlockall, timer slack, frozen GC.

Everything that can be refused (unprivileged user, container, missing core) falls back to
normal scheduling with one warning naming the reason; nothing here raises on refusal.
`AbsoluteSleep` sleeps to an absolute deadline from Python (the spin-margin calibration); the
loop's own wait is compiled (dualsys.system1.tick).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
from dataclasses import dataclass, field

from dualsys.timing import current_cpus, pin_to_core, warn_once

MCL_CURRENT, MCL_FUTURE = 1, 2
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)
HEAP_RESERVE_BYTES = 16 << 20
PR_SET_TIMERSLACK = 29
DEFAULT_FIFO_PRIORITY = 80

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
CLOCK_MONOTONIC, TIMER_ABSTIME = 1, 1
EINTR = 4


class Timespec(ctypes.Structure):
    """struct timespec, for libc's clock_nanosleep."""

    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_clock_nanosleep = _libc.clock_nanosleep
_clock_nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(Timespec), ctypes.c_void_p]
_clock_nanosleep.restype = ctypes.c_int


class AbsoluteSleep:
    """Sleeps to an absolute CLOCK_MONOTONIC time (`time.monotonic_ns`'s clock) with libc's
    clock_nanosleep(TIMER_ABSTIME), as cyclictest and the doctor's C probe do.

    `time.sleep` takes a relative duration: if the thread is held up between reading the
    clock and entering the kernel, the whole delay is added to the wake-up. An absolute
    deadline is immune to that. One instance per thread (its timespec is reused: no
    allocation beyond the transient ints of the call).
    """

    def __init__(self) -> None:
        self._ts = Timespec()
        self._ref = ctypes.pointer(self._ts)

    def __call__(self, t_ns: int) -> None:
        """Sleep until monotonic time `t_ns` (returns at once if it has passed); safe in the
        200 Hz thread. After a signal it sleeps on to the same time (its handler runs first)."""
        self._ts.tv_sec = t_ns // 1_000_000_000
        self._ts.tv_nsec = t_ns % 1_000_000_000
        while _clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, self._ref, None) == EINTR:
            pass  # a Python signal handler has run in between; sleep on to the same time


@dataclass
class RtStatus:
    """What the real-time set-up achieved, for Stats and the run summary."""

    fifo: bool = False
    priority: int = 0
    mlocked: bool = False
    timer_slack_ns: int | None = None
    cpus: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def scheduler(self) -> str:
        """'SCHED_FIFO prio N' or 'SCHED_OTHER (reason)'."""
        if self.fifo:
            return f"SCHED_FIFO prio {self.priority}"
        why = "; ".join(n for n in self.notes if "FIFO" in n) or "not requested"
        return f"SCHED_OTHER ({why})"


def _errno_text() -> str:
    err = ctypes.get_errno()
    return os.strerror(err) if err else "unknown error"


def set_timer_slack(ns: int = 1) -> bool:
    """Minimise this thread's timer slack (default 50 µs) so sleeps wake on time."""
    return _libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0) == 0


def lock_memory() -> str:
    """mlockall(current|future); returns '' on success or the reason it was refused."""
    if _libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0:
        return ""
    return f"mlockall refused: {_errno_text()}"


def tune_allocator(reserve_bytes: int = HEAP_RESERVE_BYTES) -> str:
    """Keep freed memory in the process and pre-grow the heap; '' on success or the reason.

    With mlockall(MCL_FUTURE) every page the process maps is faulted in at once. glibc's
    default gives freed heap top back to the kernel (trim) and serves large blocks with their
    own mmap, so a later malloc in the tick (ZeroMQ's message buffers) can pay for mapping and
    faulting pages again. This turns both off and reserves `reserve_bytes` of heap up front,
    the usual real-time recipe for glibc.
    """
    if not hasattr(_libc, "mallopt"):
        return "allocator unchanged: this C library has no mallopt"
    if _libc.mallopt(M_TRIM_THRESHOLD, -1) != 1 or _libc.mallopt(M_MMAP_MAX, 0) != 1:
        return "allocator unchanged: mallopt refused"
    _libc.malloc.restype = ctypes.c_void_p
    _libc.malloc.argtypes = [ctypes.c_size_t]
    _libc.free.argtypes = [ctypes.c_void_p]
    block = _libc.malloc(reserve_bytes)
    if block:
        ctypes.memset(block, 0, reserve_bytes)  # fault the pages in now, then keep them
        _libc.free(block)
    return ""


def set_fifo(priority: int) -> str:
    """Switch this process to SCHED_FIFO at `priority`; '' on success or the reason."""
    if os.environ.get("DUALSYS_NO_FIFO"):
        return "SCHED_FIFO not requested: DUALSYS_NO_FIFO is set"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as exc:
        return f"SCHED_FIFO refused: {exc.strerror or exc}"
    return ""


def setup_realtime(
    core: int | None, *, fifo: bool = True, priority: int = DEFAULT_FIFO_PRIORITY
) -> RtStatus:
    """Pin to `core`, keep freed heap, lock memory, ask for SCHED_FIFO; warn on refusal, no raise.

    Create ZeroMQ contexts BEFORE calling this: their I/O threads must stay at normal priority.
    """
    st = RtStatus()
    if core is not None:
        note = pin_to_core(core)
        if note:
            st.notes.append(note)
    if fifo:
        note = tune_allocator()
        if note:
            st.notes.append(note)
        note = lock_memory()
        st.mlocked = not note
        if note:
            st.notes.append(note)
        note = set_fifo(priority)
        st.fifo = not note
        st.priority = priority if st.fifo else 0
        if note:
            st.notes.append(note)
    else:
        st.notes.append("SCHED_FIFO not requested")
    if set_timer_slack(1):
        st.timer_slack_ns = 1
    else:
        st.notes.append(f"timer slack unchanged: {_errno_text()}")
    st.cpus = current_cpus()
    refused = [n for n in st.notes if "not requested" not in n]
    if refused:
        how = "SCHED_FIFO" if st.fifo else "normal scheduling, timer slack minimised"
        warn_once(f"real-time set-up incomplete: {'; '.join(refused)}; running on {how}")
    return st


def drop_realtime() -> None:
    """Return to SCHED_OTHER (used before slow shutdown work such as writing files)."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def freeze_gc() -> None:
    """Collect, move every live object to the permanent generation, and disable the GC."""
    gc.collect()
    gc.freeze()
    gc.disable()
