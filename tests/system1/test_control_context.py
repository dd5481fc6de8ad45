"""The control process's ZeroMQ I/O thread: ZeroMQ's placement by default, the loop's core
on request."""

import os
import time
from pathlib import Path

import pytest
import zmq

from dualsys.system1.control_proc import control_context


def _io_threads() -> dict[int, set[int]]:
    """tid -> allowed CPUs of this process's ZeroMQ I/O threads."""
    out = {}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        if (task / "comm").read_text().startswith("ZMQbg/IO"):
            out[int(task.name)] = os.sched_getaffinity(int(task.name))
    return out


def _with_context(core: int | None) -> dict[int, set[int]]:
    before = set(_io_threads())
    ctx = control_context(core)
    sock = ctx.socket(zmq.PUB)  # the I/O thread starts with the first socket
    sock.bind("inproc://control-context")
    time.sleep(0.05)
    threads = {t: cpus for t, cpus in _io_threads().items() if t not in before}
    sock.close()
    ctx.term()
    return threads


def test_io_thread_is_pinned_to_the_loop_core_on_request(monkeypatch) -> None:
    from dualsys.system1.control_proc import IO_ON_LOOP_CORE_ENV

    monkeypatch.setenv(IO_ON_LOOP_CORE_ENV, "1")
    core = max(os.sched_getaffinity(0))
    threads = _with_context(core)
    assert threads and all(cpus == {core} for cpus in threads.values())


def test_a_core_outside_the_allowed_set_is_left_alone(monkeypatch) -> None:
    """An impossible core must not abort the process (libzmq asserts on a failed affinity)."""
    from dualsys.system1.control_proc import IO_ON_LOOP_CORE_ENV

    monkeypatch.setenv(IO_ON_LOOP_CORE_ENV, "1")
    allowed = os.sched_getaffinity(0)
    threads = _with_context(4095)
    assert threads and all(cpus == allowed for cpus in threads.values())
    assert all(cpus == allowed for cpus in _with_context(None).values())


@pytest.mark.parametrize("value", [None, "0", "yes", "1 ", ""])
def test_by_default_zeromq_places_its_io_thread(monkeypatch, value) -> None:
    """Unset, or anything but "1": ZeroMQ's own placement."""
    from dualsys.system1.control_proc import IO_ON_LOOP_CORE_ENV

    if value is None:
        monkeypatch.delenv(IO_ON_LOOP_CORE_ENV, raising=False)
    else:
        monkeypatch.setenv(IO_ON_LOOP_CORE_ENV, value)
    allowed = os.sched_getaffinity(0)
    threads = _with_context(max(allowed))
    assert threads and all(cpus == allowed for cpus in threads.values())
