"""The run directory: where a running system keeps its ipc:// socket files and shm:// slot
files (owner-only).

One run owns its directory: `make_run_dir` creates it (mode 0700) with a marker file and
refuses a directory that is not dualsys's own (not empty, no marker, files dualsys does not
write), so `--run-dir ~` can never have files deleted; `RunLock` is the run's lock on it
(fcntl.flock, held for the run's life, released by the kernel when the owner dies), so a second
`dualsys up` for the same robot is refused instead of taking over the first one's sockets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path

#: Written by make_run_dir into every run directory it creates or adopts.
MARKER = ".dualsys-run"
#: The lock file of the run that owns the directory (`dualsys up`): "pid start-time".
LOCK = "up.lock"
#: The JSON files dualsys writes into a run directory: ROLE.json summaries and pids.json.
SUMMARIES = ("robot", "system2", "policy", "control", "recorder", "pids", "link", "server")
#: What dualsys writes into a run directory: a directory holding only such files (a run
#: directory from before the marker existed) is adopted; anything else makes it foreign.
_OWN_FILES = re.compile(rf"(.+\.sock|.+\.slot|({'|'.join(SUMMARIES)})\.json|.+\.mcap|up\.lock)\Z")
_ROBOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}\Z")


class RunDirError(RuntimeError):
    """A run directory cannot be used: foreign, owned by another run, or a bad robot name."""


def validate_robot_name(robot: str) -> str:
    """Return `robot` if it is usable as a name inside a path, else raise RunDirError.

    Allowed: 1-64 characters of letters, digits, "_", "-", "+", ".", starting with a letter or
    digit, and not containing ".." (so no "/", no "..", no NUL, no leading dash or dot)."""
    if not isinstance(robot, str) or not _ROBOT_NAME.match(robot) or ".." in robot:
        raise RunDirError(
            f"robot name {robot!r} cannot name a run directory: use 1-64 letters, digits, "
            "'_', '-', '+' or '.', starting with a letter or digit, without '..'"
        )
    return robot


def default_run_dir(robot: str) -> Path:
    """Per-user, per-robot run directory: $XDG_RUNTIME_DIR/dualsys-ROBOT or /tmp/dualsys-UID-ROBOT.

    `DUALSYS_RUN_DIR` overrides it (tests use this to run several systems side by side).
    Raises RunDirError for a robot name that is not a plain name (validate_robot_name).
    """
    override = os.environ.get("DUALSYS_RUN_DIR")
    if override:
        return Path(override)
    validate_robot_name(robot)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / f"dualsys-{robot}"
    return Path(tempfile.gettempdir()) / f"dualsys-{os.getuid()}-{robot}"


def make_run_dir(path: Path) -> Path:
    """Create the run directory with mode 0700 (ipc socket files inherit its protection) and
    mark it as dualsys's own. Raises RunDirError if `path` exists and is not dualsys's own: not
    a directory, or not empty and without the marker and holding files dualsys does not write."""
    path = Path(path)
    if "\0" in str(path):
        raise RunDirError(f"run directory {str(path)!r} contains a NUL character")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    marker = path / MARKER
    if not marker.exists():
        foreign = sorted(n for n in os.listdir(path) if n != MARKER and not _OWN_FILES.match(n))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise RunDirError(
                f"run directory {path} is not dualsys's own: it is not empty ({shown}) and "
                f"has no {MARKER} marker; choose an empty or new directory (--run-dir)"
            )
        with contextlib.suppress(FileExistsError):  # several processes may start at once
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"dualsys run directory (sockets, summaries); safe to delete\n")
            os.close(fd)
    os.chmod(path, 0o700)
    return path


class RunLock:
    """The lock of the run that owns a run directory (`dualsys up`, the evaluator).

    `RunLock(run_dir)` takes an exclusive flock on {run_dir}/up.lock without waiting and writes
    "pid start-time" into it; if another run holds it, RunDirError names that run's pid and
    start time. The kernel drops the lock when the owner exits or is killed, so a crashed run
    never blocks the next one. The descriptor is not inherited by children (O_CLOEXEC).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").split()
            os.close(fd)
            pid = holder[0] if holder else "?"
            since = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder[1])))
                if len(holder) > 1 and holder[1].replace(".", "", 1).isdigit()
                else "?"
            )
            raise RunDirError(
                f"run directory {run_dir} is in use by another dualsys run (pid {pid}, "
                f"started {since}); stop it first (or use another --run-dir)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {time.time():.0f}\n".encode(), 0)
        self.fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays; only the flock means "in use"."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def remove_links(run_dir: str | Path) -> None:
    """Remove the run's ipc:// socket files and shm:// slot files (at the end of a run, so
    no reader of the next run maps an old slot or connects to a dead socket)."""
    for pattern in ("*.sock", "*.slot"):
        for path in Path(run_dir).glob(pattern):
            path.unlink(missing_ok=True)


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
