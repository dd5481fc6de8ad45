"""One System 2 server, several robots: a real `dualsys system2 serve` (CURVE, one key per
robot) and robot stand-in processes (dualsys.testing.fleet_robot) sending real-sized frames.

Proves: each robot gets latents computed for its own instruction and nobody else's; a robot
that picks its own connection name (a ZeroMQ routing id; the way to take over another's) gets
nothing at all;
a robot flooding frames as fast as it can does not starve the others (they keep 7-10 Hz),
its excess is counted as `flood`; the server reports per robot by key name and batches
(batch size > 1). Fails on the old code: there is no fleet server, and a server that named
robots by what they claim or served them one after another would break these assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from dualsys.bus.keyfiles import generate
from dualsys.cli import main as cli_main
from dualsys.testing.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DURATION_S = 10.0


def _keys(tmp: Path, robots: list[str]) -> Path:
    keys = tmp / "keys"
    assert cli_main(["keys", "generate", "--out", str(keys)]) == 0
    allowed = keys / "allowed"
    for role in ("robot", "operator"):
        (allowed / role).mkdir(parents=True, mode=0o700)
    for name in robots:
        generate(keys, name)
        shutil.copy(keys / f"{name}.key", allowed / "robot" / f"{name}.key")
    return keys


def _wait_listening(port: int, proc: subprocess.Popen, log: Path) -> None:
    end = time.monotonic() + 60
    while "serving gr1 robots" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < end, log.read_text()
        time.sleep(0.2)


def _robot(port: int, keys: Path, key: str, text: str, out: Path, *extra: str):
    argv = [sys.executable, "-m", "dualsys.testing.fleet_robot", "--server"]
    argv += [f"tcp://127.0.0.1:{port}", "--keys-dir", str(keys), "--key", key]
    argv += ["--instruction", text, "--duration", str(DURATION_S), "--out", str(out), *extra]
    return subprocess.Popen(argv, cwd=ROOT)


def test_one_server_many_robots(tmp_path: Path) -> None:
    keys = _keys(tmp_path, ["alpha", "beta", "gamma", "flood"])
    port, log = free_port(), tmp_path / "server.log"
    sets = f"security.curve=true;security.keys_dir={keys};security.authorized_dir=allowed"
    env = dict(os.environ, DUALSYS_SET=sets, PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "dualsys.cli", "system2", "serve", "--robot", "gr1"]
    argv += ["--untrained", "--bind", f"tcp://127.0.0.1:{port}", "--run-dir", str(tmp_path / "s")]
    server = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    robots = []
    try:
        _wait_listening(port, server, log)
        texts = {"alpha": "raise both arms", "beta": "wave the left hand", "gamma": "point"}
        outs = {k: tmp_path / f"{k}.json" for k in [*texts, "flood"]}
        robots.append(_robot(port, keys, "alpha", texts["alpha"], outs["alpha"]))
        robots.append(_robot(port, keys, "beta", texts["beta"], outs["beta"]))
        end = time.monotonic() + 20
        while "robot 'alpha' connected" not in log.read_text():
            assert time.monotonic() < end, log.read_text()
            time.sleep(0.1)
        # gamma picks its own connection name (the way to take over another robot's name
        # when that robot's connection drops): the server serves only names libzmq assigned
        robots.append(
            _robot(port, keys, "gamma", texts["gamma"], outs["gamma"], "--routing-id", "a1")
        )
        robots.append(_robot(port, keys, "flood", "touch the red cup", outs["flood"], "--flood"))
        # `dualsys status --server` shows each robot by its key name while they run
        end, shown = time.monotonic() + 20, ""
        while not all(f"  {n}: " in shown for n in ("alpha", "beta", "flood")):
            assert time.monotonic() < end, shown
            st = subprocess.run(
                [*argv[:3], "status", "--robot", "gr1", "--server", "--once", "--timeout", "10"]
                + ["--run-dir", str(tmp_path / "s")],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert st.returncode == 0, st.stderr
            shown = st.stdout
        assert " Hz, " in shown and "input age p99" in shown, shown
        for r in robots:
            assert r.wait(DURATION_S + 30) == 0
    finally:
        for r in robots:
            if r.poll() is None:
                r.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(15)
    got = {k: json.loads(p.read_text()) for k, p in outs.items()}
    server_hz = json.loads((tmp_path / "s" / "server.json").read_text())["active_rate_hz"]
    for name in ("alpha", "beta"):
        assert set(got[name]["instructions"]) == {texts[name]}, got[name]
        # not starved by the flood: served in most of the server's steps (at 10 Hz on a quiet
        # machine, benchmarks/results/fleet.md; a starved robot would get a small share)
        assert got[name]["rate_hz"] >= 0.6 * server_hz, (name, got[name], server_hz)
    assert got["gamma"]["latents"] == 0, got["gamma"]
    summary0 = json.loads((tmp_path / "s" / "server.json").read_text())
    assert summary0["refused"].get("chosen_routing_id", 0) > 0, summary0["refused"]
    summary = json.loads((tmp_path / "s" / "server.json").read_text())
    robots_seen = summary["robots"]
    assert {"alpha", "beta", "flood"} <= set(robots_seen), robots_seen  # names from key files
    assert robots_seen["flood"]["dropped"].get("flood", 0) > 0, robots_seen["flood"]
    assert summary["batch"]["max"] >= 2, summary["batch"]  # one forward pass for several
    for name in ("alpha", "beta"):
        assert robots_seen[name]["instruction"] == texts[name]
