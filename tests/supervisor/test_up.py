"""`dualsys up` end to end: real processes, real sockets, the run report, failure policy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualsys import config
from dualsys.testing.floor import FloorBeside, judge_misses

pytestmark = [pytest.mark.slow]
CFG = config.load_robot("gr1")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); count it as gone only if reaped state is Z
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _up(tmp_path: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dualsys.cli", "up", "--robot", "gr1", "--headless"]
    cmd += ["--run-dir", str(tmp_path / "run"), "--log-dir", str(tmp_path / "logs"), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dualsys.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _wait_pids(tmp_path: Path, roles: tuple[str, ...], timeout: float = 120) -> dict[str, int]:
    path = tmp_path / "run" / "pids.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            pids = json.loads(path.read_text())
            if all(r in pids for r in roles):
                return pids
        time.sleep(0.2)
    raise AssertionError(f"no pids.json with {roles}")


def _wait_ready(proc: subprocess.Popen, lines: list[str], timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("dualsys up exited during start-up:\n" + "".join(lines))
        lines.append(line)
        if "all processes ready" in line:
            return
    raise AssertionError("not ready:\n" + "".join(lines))


@pytest.mark.timing
def test_up_headless_run_report_and_clean_exit(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    with FloorBeside(CFG) as beside:  # the machine's floor for as long as the run lasts
        proc = _up(tmp_path, "--duration", "15", "--report", str(report_path))
        out, _ = proc.communicate(timeout=240)
        floors = [beside.stop()]
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    s1 = report.get("system1") or {}
    ok, why = judge_misses(
        s1.get("deadline_misses", 0), s1.get("ticks", 0), CFG.budgets.miss_rate, floors
    )
    print(why)
    assert ok, why
    assert proc.returncode == 0, out
    s1, s2, b = report["system1"], report["system2"], report["budget"]
    for key in ("robot", "duration_s", "clean_exit", "system1", "system2", "bus", "budget"):
        assert key in report
    for key in ("rate_hz", "ticks", "deadline_misses", "miss_rate", "max_consecutive_misses"):
        assert key in s1
    for key in ("p50", "p99", "p999", "max"):
        assert key in s1["lateness_us"]
    for key in ("p50", "p99", "max"):
        assert key in s1["work_us"] and key in s1["latent_age_ms"]
    assert {"p50", "p99"} <= set(s1["chunk_latency_ms"]) and s1["chunks"] > 10
    assert s1["scheduler"] and s1["cpus"] == [CFG.cores.system1]
    assert {"rate_hz", "steps", "step_ms", "cpus"} <= set(s2)
    assert {"realtime_factor", "watchdog_trips"} <= set(report["robot"])
    assert isinstance(report["bus"]["dropped"], dict)
    assert report["clean_exit"] is True
    assert report["shutdown_s"] <= 5.0 and set(report["exit_codes"].values()) == {0}
    assert abs(s1["rate_hz"] - CFG.rates.control_hz) <= 0.01 * CFG.rates.control_hz
    assert CFG.rates.system2_min_hz <= s2["rate_hz"] <= CFG.rates.system2_max_hz * 1.01
    # the miss budget is judged against the machine's floor above; every other budget holds
    broken = [k for k, v in b["checks"].items() if not v["ok"] and k != "miss_rate"]
    assert not broken, b["checks"]
    assert report["robot"]["realtime_factor"] > 0.95
    assert report_path.with_suffix(".png").stat().st_size > 10_000
    pids = json.loads((tmp_path / "run" / "pids.json").read_text())
    pids.pop("supervisor")
    assert not [r for r, pid in pids.items() if _alive(pid)], "orphan processes left"
    assert not list((tmp_path / "run").glob("*.sock")), "ipc socket files left behind"
    assert "Budgets: all held" in out or not b["checks"]["miss_rate"]["ok"]
    assert "Machine: " in out and report["machine"]["checks"]


def test_system2_killed_is_restarted_and_control_death_stops_all(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    proc = _up(tmp_path, "--duration", "60", "--report", str(report_path))
    lines: list[str] = []
    try:
        _wait_ready(proc, lines)
        pids = _wait_pids(tmp_path, ("system2", "control"))
        run = ["--robot", "gr1", "--run-dir", str(tmp_path / "run")]
        said = _cli("say", "raise both arms", *run)
        assert said.returncode == 0, said.stderr
        time.sleep(1.0)
        status = _cli("status", "--once", *run)
        assert status.returncode == 0, status.stderr
        assert "S1 " in status.stdout and '"raise both arms"' in status.stdout
        os.kill(pids["system2"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        new = pids["system2"]
        while new == pids["system2"] and time.monotonic() < deadline:
            time.sleep(0.2)
            new = json.loads((tmp_path / "run" / "pids.json").read_text())["system2"]
        assert new != pids["system2"], "System 2 was not restarted"
        time.sleep(2)
        os.kill(pids["control"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + out
    assert proc.returncode == 1, out
    assert "control died" in out
    report = json.loads(report_path.read_text())
    assert report["clean_exit"] is False and "control died" in report["reason"]
    assert report["restarts"]["system2"] >= 1
    final = json.loads((tmp_path / "run" / "pids.json").read_text())
    final.pop("supervisor")
    assert not [r for r, pid in final.items() if _alive(pid)], "orphan processes left"


def test_handshake_mismatch_stops_with_clear_message(tmp_path: Path) -> None:
    """The supervisor believes the robot is 'gr1x'; its children are started with gr1."""
    from dualsys.supervisor import Supervisor, SupervisorError, UpOptions

    other = tmp_path / "other.toml"
    other.write_text(CFG.path.read_text().replace('name = "gr1"', 'name = "gr1x"'))
    sup = Supervisor(config.load(other), tmp_path / "run", UpOptions(untrained=True))
    argv = sup._argv
    sup._argv = lambda role: [str(CFG.path) if a == str(other) else a for a in argv(role)]
    with pytest.raises(SupervisorError, match="handshake with robot .* robot 'gr1' != 'gr1x'"):
        sup.start()
    codes = sup.stop()
    started = [r for r, c in sup.children.items() if c.proc is not None]
    assert started and all(codes[r] is not None for r in started)
