"""Issue 17.5: one run owns its run directory. A second run is refused naming the first (its
lock dies with it, even on SIGKILL); a directory that is not dualsys's own is refused and left
untouched; robot names that would leave the runtime directory are refused."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualsys import config
from dualsys.rundir import MARKER, RunDirError, RunLock, default_run_dir, make_run_dir
from dualsys.supervisor import Supervisor

CFG = config.load_robot("gr1")


def test_second_lock_is_refused_naming_the_first_and_free_after_release(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    first = RunLock(run)
    with pytest.raises(RunDirError, match=rf"in use by another dualsys run \(pid {os.getpid()}, "):
        RunLock(run)
    first.release()
    RunLock(run).release()  # free again


def test_second_supervisor_is_refused_and_leaves_the_running_one_alone(tmp_path: Path) -> None:
    """The old supervisor deleted the running system's summaries and took over its sockets."""
    run = make_run_dir(tmp_path / "run")
    owner = RunLock(run)
    (run / "control.json").write_text("{}\n")
    (run / "stats.sock").write_bytes(b"")  # stands in for the running system's socket file
    sup = Supervisor(CFG, run)
    with pytest.raises(RunDirError, match=rf"pid {os.getpid()}"):
        sup.start()
    assert sup.stop() == {}  # nothing was started, so nothing is stopped or removed
    assert (run / "control.json").exists() and (run / "stats.sock").exists()
    assert not (run / "pids.json").exists()
    owner.release()


def test_lock_is_released_when_the_owner_is_killed(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    code = (
        "import sys, time; from dualsys.rundir import RunLock; "
        f"lock = RunLock({str(run)!r}); print('locked', flush=True); time.sleep(60)"
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"pid {owner.pid}, started \d{{4}}-"):
            RunLock(run)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        RunLock(run).release()  # the kernel dropped the dead owner's lock
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)


def test_second_dualsys_up_exits_at_once_with_a_clear_message(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    owner = RunLock(run)
    cmd = [sys.executable, "-m", "dualsys.cli", "up", "--robot", "gr1", "--headless"]
    cmd += ["--run-dir", str(run), "--untrained", "--duration", "5"]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert f"in use by another dualsys run (pid {os.getpid()}" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (run / "pids.json").exists(), "the second run started processes"
    assert time.monotonic() - t0 < 30
    owner.release()


@pytest.mark.parametrize("foreign", ["package.json", "notes.txt", "src"])
def test_foreign_directory_is_refused_and_untouched(tmp_path: Path, foreign: str) -> None:
    """The old supervisor chmod-ed such a directory to 0700 and deleted every *.json in it."""
    home = tmp_path / "project"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    target = home / foreign
    if foreign == "src":
        target.mkdir()
    else:
        target.write_text('{"name": "mine"}\n')
    with pytest.raises(RunDirError, match=rf"{home} is not dualsys's own.*{foreign}"):
        make_run_dir(home)
    with pytest.raises(RunDirError, match="not dualsys's own"):
        Supervisor(CFG, home).start()
    assert target.exists() and not (home / MARKER).exists()
    assert stat.S_IMODE(home.stat().st_mode) == 0o755
    if foreign != "src":
        with pytest.raises(RunDirError, match="exists and is not a directory"):
            make_run_dir(target)
    assert (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "dualsys.cli",
                "record",
                "--run-dir",
                str(home),
                "--duration",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).returncode
        == 2
    )


def test_own_and_legacy_directories_are_adopted(tmp_path: Path) -> None:
    fresh = make_run_dir(tmp_path / "new")
    assert (fresh / MARKER).exists()
    (fresh / "notes.txt").write_text("a marked directory is ours whatever it holds\n")
    make_run_dir(fresh)
    legacy = tmp_path / "legacy"  # left by a version that wrote no marker
    legacy.mkdir()
    for name in ("stats.sock", "control.json", "pids.json", "run.mcap", "up.lock"):
        (legacy / name).write_bytes(b"")
    make_run_dir(legacy)
    assert (legacy / MARKER).exists()
    assert stat.S_IMODE(legacy.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "..",
        "a/b",
        "/etc",
        "x/../../y",
        "",
        "nul\x00",
        "-rf",
        ".hidden",
        "a b",
        "é",
        "a" * 65,
    ],
)
def test_robot_names_that_leave_the_runtime_dir_are_refused(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DUALSYS_RUN_DIR", raising=False)
    with pytest.raises(RunDirError, match="cannot name a run directory"):
        default_run_dir(name)


@pytest.mark.parametrize("name", ["gr1", "gr1_curve", "h1-2.0", "G1+hands"])
def test_plain_robot_names_are_accepted(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUALSYS_RUN_DIR", raising=False)
    path = default_run_dir(name)
    assert path.name.endswith(f"-{name}") and ".." not in path.parts
