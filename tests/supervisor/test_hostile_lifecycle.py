"""Issue 17.8 (supervisor side): Ctrl-C during start-up stops at once; a restarted recorder
never truncates the recording so far; restart backoff starts over after a healthy period; the
supervisor's events and the report's history stay bounded however long the run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcap.reader import make_reader

from dualsys import config
from dualsys.record import McapLog, fresh_path
from dualsys.report import History
from dualsys.rundir import RunLock, make_run_dir
from dualsys.supervisor import MAX_EVENTS, Child, Supervisor, UpOptions

CFG = config.load_robot("gr1")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_ctrl_c_during_start_up_stops_at_once(tmp_path: Path) -> None:
    """The old `up` kept waiting for every process to be ready (up to the 120 s ready timeout)
    before it looked at the signal."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "dualsys.cli", "up", "--robot", "gr1", "--headless"]
    cmd += ["--run-dir", str(run), "--log-dir", str(tmp_path / "logs"), "--untrained"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (run / "pids.json").exists():  # the robot process has been started
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        time.sleep(1.0)  # inside the wait for the robot's (or System 2's) handshake
        pids = json.loads((run / "pids.json").read_text())
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert took < 10.0, f"took {took:.1f} s to stop:\n{out}"
    assert proc.returncode == 130, out
    assert "SIGINT: stopped during start-up" in out
    pids.pop("supervisor")
    assert not [r for r, pid in pids.items() if _alive(pid)], "orphan processes left"
    assert not list(run.glob("*.sock"))
    RunLock(run).release()  # the run directory is free again


def test_restarted_recorder_keeps_the_recording_so_far(tmp_path: Path) -> None:
    """The old recorder opened its --out with "wb": a restart truncated the first recording."""
    out = tmp_path / "run.mcap"
    first = McapLog(out, "gr1", {})
    first.write("state", b"\x93\x01\x02\x03", 1, 1, 1)
    first.close()
    size = out.stat().st_size
    second = McapLog(out, "gr1", {})  # the same argv, as the supervisor restarts it
    second.write("state", b"\x93\x04", 2, 2, 2)
    second.close()
    assert second.path == tmp_path / "run.1.mcap"
    assert out.stat().st_size == size
    with open(out, "rb") as f:
        assert [m.data for _, _, m in make_reader(f).iter_messages()] == [b"\x93\x01\x02\x03"]
    assert McapLog(out, "gr1", {}).path == tmp_path / "run.2.mcap"
    assert fresh_path(tmp_path / "noext") == tmp_path / "noext"
    (tmp_path / "noext").write_bytes(b"x")
    assert fresh_path(tmp_path / "noext") == tmp_path / "noext.1"


@pytest.fixture
def sup(tmp_path: Path):
    run = make_run_dir(tmp_path / "run")
    s = Supervisor(CFG, run, UpOptions(healthy_after_s=1.0))
    s.lock = RunLock(run)
    s._open_links()
    yield s
    s.stop()


def _delays(sup: Supervisor, role: str, n: int, timeout: float) -> list[float]:
    """Poll until `n` more restart delays of `role` are announced; return them."""
    seen = len([e for e in sup.events if e.startswith(role)])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup.poll()
        events = [e for e in sup.events if e.startswith(role)]
        if len(events) >= seen + n:
            return [float(re.search(r"restart in ([\d.]+) s", e)[1]) for e in events[seen:]]
        time.sleep(0.02)
    raise AssertionError(f"no {n} restarts of {role}: {list(sup.events)}")


def test_restart_backoff_starts_over_after_a_healthy_period(sup: Supervisor) -> None:
    """The old backoff grew with the total number of restarts, however long ago they were."""
    crash = [sys.executable, "-c", "raise SystemExit(3)"]
    child = Child("policy", crash)
    sup.children["policy"] = child
    sup._spawn(child)
    assert _delays(sup, "policy", 3, 30) == [0.5, 1.0, 2.0]  # a crash loop backs off
    child.argv = [sys.executable, "-c", "import time; time.sleep(1.5)"]  # healthy > 1 s
    assert _delays(sup, "policy", 1, 30) == [0.5]
    assert child.restarts == 3 and list(child.exit_codes) == [3, 3, 3, 0]


def test_events_and_history_are_bounded(sup: Supervisor) -> None:
    for i in range(10 * MAX_EVENTS):
        sup.events.append(f"event {i}")
    assert len(sup.events) == MAX_EVENTS
    assert sup.status()["events"] == [
        f"event {i}" for i in range(10 * MAX_EVENTS - 3, 10 * MAX_EVENTS)
    ]
    history = History(max_points=500)
    for i in range(2 * 3600 * 24):  # a day at the 2 Hz sampling of `dualsys up`
        history.append({"t": i / 2})
    assert len(history) <= 500
    ts = [p["t"] for p in history.points]
    assert ts[0] == 0.0 and ts[-1] > 0.95 * 3600 * 24 and ts == sorted(ts)  # the whole span


def test_pid_is_not_reused_across_restarts(sup: Supervisor) -> None:
    """A restarted child is believed only after its own Hello: its predecessor's pid is not."""
    child = Child("system2", [sys.executable, "-c", "import time; time.sleep(0.2)"])
    sup.children["system2"] = child
    sup._spawn(child)
    first = child.proc.pid
    child.hello_pid = first  # as if its Hello had arrived
    _delays(sup, "system2", 1, 30)
    while child.proc.pid == first:
        sup.poll()
        time.sleep(0.02)
    assert child.hello_pid == 0 and child.proc.pid != first and os.getpid() != first
