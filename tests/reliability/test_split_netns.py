"""Split bring-up across network namespaces: `dualsys up --system2 tcp://...` in one network
namespace, `dualsys system2 serve` in another (a veth pair between them, CURVE on), the
server's clock 2 h ahead. Created here when running as root with `ip netns`; skipped with the
reason otherwise.

Proves the robot side follows a System 2 on another network stack with a clock hours away:
System 1 runs on its latents (chunks used, latent age inside the budget) and the report shows
the measured offset (+7200 s) and its uncertainty. Fails on the old code: no split mode.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from dualsys import config
from dualsys.cli import main as cli_main
from dualsys.testing.netns import ADDR, NS

ROOT = Path(__file__).resolve().parents[2]
PORT = 5793
SHIFT_S = 7200.0


def test_split_bring_up_across_namespaces(netns, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert cli_main(["keys", "generate", "--out", str(keys)]) == 0
    sets = ["security.curve=true", f"security.keys_dir={keys}"]
    env = dict(os.environ, **{config.OVERRIDES_ENV: ";".join(sets)}, PYTHONPATH=str(ROOT))
    py = sys.executable
    srv = ["ip", "netns", "exec", NS[0], py, "-m", "dualsys.cli", "system2", "serve"]
    srv += ["--robot", "gr1", "--untrained", "--bind", f"tcp://{ADDR[0]}:{PORT}"]
    srv += ["--run-dir", str(tmp_path / "srv")]
    server = subprocess.Popen(
        srv,
        cwd=ROOT,
        env=dict(env, DUALSYS_CLOCK_SHIFT_S=str(SHIFT_S)),
        stdout=(tmp_path / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    report = tmp_path / "r.json"
    up = ["ip", "netns", "exec", NS[1], py, "-m", "dualsys.cli", "up", "--robot", "gr1"]
    up += ["--untrained", "--system2", f"tcp://{ADDR[0]}:{PORT}", "--headless", "--no-fifo"]
    up += ["--duration", "25", "--run-dir", str(tmp_path / "run"), "--report", str(report)]
    for s in sets:
        up += ["--set", s]
    try:
        res = subprocess.run(up, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads(report.read_text())
    link = rep["link"]
    assert abs(link["offset_s"] - SHIFT_S) < 0.05, link
    assert link["offset_uncertainty_ms"] < 20, link
    assert link["latents"] > 50, link  # ~10 Hz once the server answers
    budget = config.load_robot("gr1").budgets.latent_age_p99_ms
    assert link["latent_age_ms"]["p99"] < budget, link
    s1 = rep["system1"]
    # p50, not p99: System 1's tail on a loaded shared 2-core box is the timing tests' job
    assert s1["chunks"] > 0 and s1["latent_age_ms"]["p50"] < budget, s1
    assert "run" in [e["state"] for e in s1["safe_state_events"]], s1["safe_state_events"]
    shown = re.search(r"System 2 link .* clock offset ([-+][0-9.]+) s", res.stderr)
    assert shown and abs(float(shown.group(1)) - SHIFT_S) < 0.05, res.stderr
