"""`dualsys status` (the live panel) answers Ctrl-C and SIGTERM at once and exits 0, at any
moment: while waiting for the first snapshot, and while the panel redraws from a busy
supervisor (a real ZeroMQ publisher on the status socket)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from dualsys.bus import Publisher, Stats
from dualsys.supervisor import STATUS_SOCKET

#: Ctrl-C must end the panel within this (s); it looks at its stop flag every 0.1 s
ANSWER_S = 2.0


def _status(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dualsys.cli", "status", "--run-dir", str(run_dir), "--timeout",
         "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _publish(run_dir: Path, stop: threading.Event) -> None:
    """A supervisor stand-in: status snapshots at 50 Hz (faster than the real 2 Hz)."""
    ctx = zmq.Context()
    pub = Publisher(ctx, f"ipc://{run_dir / STATUS_SOCKET}", "supervisor", bind=True)
    values = {"s1.ticks": 1.0, "s1.misses": 0.0, "s2.hz": 9.5}
    while not stop.is_set():
        pub.send(Stats(process="supervisor", values=values))
        time.sleep(0.02)
    pub.close()
    ctx.destroy(0)


def _ends(proc: subprocess.Popen, sig: int) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(ANSWER_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"dualsys status ignored signal {sig} for {ANSWER_S} s: {proc.stderr.read()}")
    return code, time.monotonic() - t0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_status_stops_at_once_while_waiting(tmp_path: Path, sig: int) -> None:
    (tmp_path / STATUS_SOCKET).touch()  # a run directory whose supervisor has not spoken yet
    proc = _status(tmp_path)
    time.sleep(2.0)  # well inside its 20 s wait for the first snapshot
    code, took = _ends(proc, sig)
    assert code == 0, proc.stderr.read()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_status_stops_at_once_while_drawing(tmp_path: Path, sig: int) -> None:
    stop = threading.Event()
    pub = threading.Thread(target=_publish, args=(tmp_path, stop), daemon=True)
    pub.start()
    try:
        for delay in (1.5, 1.73, 2.11):  # different moments of the redraw cycle
            proc = _status(tmp_path)
            time.sleep(delay)
            assert proc.poll() is None, proc.stderr.read()  # the panel is up
            code, took = _ends(proc, sig)
            assert code == 0, proc.stderr.read()
    finally:
        stop.set()
        pub.join(5)
