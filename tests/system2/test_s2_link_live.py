"""Split bring-up, live: a simulated GR-1 under `dualsys up --system2 tcp://...` against a
`dualsys system2 serve` whose monotonic clock is 2 h ahead, then (after a kill) 2 h behind.

Proves: System 1 follows the remote latents (safe state "run", chunks used, latent age within
budget) with System 2's clock hours away from the robot's; the link measures the offset
(+-7200 s) and its uncertainty and the report shows them; killing the server makes the
control loop hold; a restarted server is followed again without restarting `up`.
On the old code there is no `--system2` / `system2 serve` at all; and a link that aged latents
by the server's clock would hold forever (+2 h: latents from the future) or walk to the
default pose (-2 h: latents hours old).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import zmq

from dualsys import config
from dualsys.bus import Stats, Subscriber
from dualsys.cli import main as cli_main
from dualsys.testing.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SHIFT_S = 7200.0
RUN, DEFAULT, HOLD_OR_DEFAULT = 0.0, 2.0, (1.0, 2.0)


def start_server(port: int, shift_s: float, run_dir: Path, env: dict, log: Path):
    e = dict(env, DUALSYS_CLOCK_SHIFT_S=str(shift_s))
    argv = [sys.executable, "-m", "dualsys.cli", "system2", "serve", "--robot", "gr1"]
    argv += ["--untrained", "--bind", f"tcp://127.0.0.1:{port}", "--run-dir", str(run_dir)]
    return subprocess.Popen(argv, cwd=ROOT, env=e, stdout=log.open("ab"), stderr=subprocess.STDOUT)


class Status:
    """The supervisor's status snapshots (`dualsys status`'s source)."""

    def __init__(self, ctx: zmq.Context, run_dir: Path) -> None:
        self.sub = Subscriber(ctx, f"ipc://{run_dir}/status.sock", (Stats,))
        self.values: dict[str, float] = {}

    def wait(self, pred, timeout_s: float, what: str) -> dict[str, float]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            msg = self.sub.recv(timeout_ms=500)
            if msg is not None:
                self.values = msg.values
                if pred(self.values):
                    return self.values
        raise AssertionError(f"timed out waiting for {what}; last status {self.values}")

    def hold_for(self, pred, seconds: float, what: str) -> None:
        """Every snapshot for `seconds` satisfies pred (2 Hz snapshots)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.sub.recv(timeout_ms=1500)
            assert msg is not None, "the supervisor stopped reporting"
            self.values = msg.values
            assert pred(self.values), f"{what} broken: {self.values}"


def test_remote_system2_with_shifted_clocks(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert cli_main(["keys", "generate", "--out", str(keys)]) == 0
    sets = ["security.curve=true", f"security.keys_dir={keys}"]
    env = dict(os.environ, **{config.OVERRIDES_ENV: ";".join(sets)}, PYTHONUNBUFFERED="1")
    port, run_dir, srv_dir = free_port(), tmp_path / "run", tmp_path / "srv"
    report = tmp_path / "r.json"
    server = start_server(port, SHIFT_S, srv_dir, env, tmp_path / "server.log")
    argv = [sys.executable, "-m", "dualsys.cli", "up", "--robot", "gr1", "--untrained"]
    argv += ["--system2", f"tcp://127.0.0.1:{port}", "--headless", "--duration", "75"]
    argv += ["--run-dir", str(run_dir), "--report", str(report), "--no-fifo"]
    argv += ["--log-dir", str(tmp_path / "logs")]
    for s in sets:
        argv += ["--set", s]
    up = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ctx = zmq.Context()
    status = None
    budget = config.load_robot("gr1").budgets.latent_age_p99_ms
    try:
        deadline = time.monotonic() + 90
        while not (run_dir / "status.sock").exists():
            assert up.poll() is None, up.stdout.read().decode()
            assert time.monotonic() < deadline, "dualsys up did not start"
            time.sleep(0.2)
        status = Status(ctx, run_dir)

        def fresh(sign: float):  # the latents System 1 sees are fresh, the offset is right
            return lambda v: (
                abs(v.get("system2.offset_s", 0) - sign * SHIFT_S) < 0.05
                and 0 <= v.get("latent_age_ms", -1) < budget
                and v.get("control.safe_state") != DEFAULT  # a hold for "no chunk" may happen
            )  # on a loaded 2-core box (the policy starved); the latent never causes one

        def steady(sign: float):  # over a 3 s window on a shared, loaded 2-core box: the
            return lambda v: (  # offset holds and the latents never go dead
                abs(v.get("system2.offset_s", 0) - sign * SHIFT_S) < 0.05
                and v.get("control.safe_state") != DEFAULT
            )

        def following(sign: float):
            return lambda v: fresh(sign)(v) and v.get("control.safe_state") == RUN

        v = status.wait(following(+1), 90, "System 1 following a server 2 h ahead")
        status.hold_for(steady(+1), 3, "following a server 2 h ahead")
        assert status.values["system2.steps"] > 0, status.values
        assert v["system2.offset_unc_ms"] < 20, v
        server.send_signal(signal.SIGKILL)
        server.wait(5)
        status.wait(lambda v: v.get("control.safe_state") in HOLD_OR_DEFAULT, 10, "a hold")
        server = start_server(port, -SHIFT_S, srv_dir, env, tmp_path / "server.log")
        v = status.wait(following(-1), 60, "System 1 following a restarted server 2 h behind")
        status.hold_for(steady(-1), 3, "following a server 2 h behind")
        assert status.values["system2.steps"] > 0, status.values
        assert v["control.restarts"] == 0 and v["system2.restarts"] == 0, v
        up.send_signal(signal.SIGINT)
        out = up.communicate(timeout=30)[0].decode()
        # the link republishes on the robot computer's latent slot: System 1 read it there
        via = json.loads((run_dir / "control.json").read_text())["latent_link"]
        assert via["shm"] > 0 and via["zmq"] == 0, via
    finally:
        if status is not None:
            status.sub.close()
        ctx.destroy(0)
        for p in (up, server):
            if p.poll() is None:
                p.kill()
                p.wait(5)
    assert up.returncode == 0, out
    rep = json.loads(report.read_text())
    link = rep["link"]
    lo, hi = link["offset_range_s"]
    assert abs(lo + SHIFT_S) < 0.05 and abs(hi - SHIFT_S) < 0.05, link
    assert link["offset_uncertainty_ms"] < 20, link
    assert link["clock_resets"] >= 1, link  # the restarted server's clock was noticed
    assert link["latent_age_ms"]["p99"] < budget, link
    assert rep["system1"]["chunks"] > 0
    states = [e["state"] for e in rep["system1"]["safe_state_events"]]
    assert "run" in states and states.count("run") >= 2, states  # followed, held, followed
    shown = re.search(r"System 2 link .* clock offset ([-+][0-9.]+) s", out)
    assert shown and abs(float(shown.group(1)) + SHIFT_S) < 0.05, out  # the last: 2 h behind
