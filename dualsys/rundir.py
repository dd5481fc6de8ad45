"""The run directory: where a running system keeps its ipc:// socket files (owner-only)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def default_run_dir(robot: str) -> Path:
    """Per-user, per-robot run directory: $XDG_RUNTIME_DIR/dualsys-ROBOT or /tmp/dualsys-UID-ROBOT.

    `DUALSYS_RUN_DIR` overrides it (tests use this to run several systems side by side).
    """
    override = os.environ.get("DUALSYS_RUN_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / f"dualsys-{robot}"
    return Path(tempfile.gettempdir()) / f"dualsys-{os.getuid()}-{robot}"


def make_run_dir(path: Path) -> Path:
    """Create the run directory with mode 0700 (ipc socket files inherit its protection)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def exit_now(code: int) -> None:
    """End a process right after its summary is written, skipping interpreter teardown.

    torch and numba take up to seconds to tear down on a loaded machine; the supervisor gives
    each child a bounded time to exit after SIGTERM, so long-running processes leave this way.
    """
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def write_summary(run_dir: str | Path, role: str, summary: dict) -> Path:
    """Write a process's end-of-run summary to {run_dir}/{role}.json (read by the report)."""
    path = Path(run_dir) / f"{role}.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path
