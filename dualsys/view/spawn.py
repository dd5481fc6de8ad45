"""Start the viewer process beside a command that runs a live system on its own (`dualsys sim
--view`, `dualsys eval --view`); `dualsys up --view` has the supervisor start it instead."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
from pathlib import Path

from dualsys.config import RobotConfig

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_viewer(cfg: RobotConfig, run_dir: Path, view_args: list[str]) -> subprocess.Popen:
    """`dualsys view` attached to `run_dir`, ended with its parent (also if that dies)."""
    argv = [sys.executable, "-m", "dualsys.cli", "view", "--robot", str(cfg.path)]
    argv += ["--run-dir", str(run_dir), *view_args]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def stop_viewer(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 3 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
