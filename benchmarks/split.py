"""The trained GR-1 with System 2 on another host whose clock is hours away.

Two network namespaces joined by a veth pair stand in for the robot computer and the GPU
computer (dualsys.testing.netns; root only). The GPU side runs `dualsys system2 serve` with the
shipped weights and its monotonic clock shifted by --shift hours (DUALSYS_CLOCK_SHIFT_S); the
robot side runs `dualsys eval --system2 tcp://...`: the simulation, System 1 and the link, with
CURVE keys on the tcp link. Reports the behaviours' success, every timing budget, and the
link's measured clock offset, its uncertainty, round trip and latent age.

    .venv/bin/python benchmarks/split.py [--episodes 2] [--shift 2] [--shift -2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import header, write  # noqa: E402

from dualsys import config  # noqa: E402
from dualsys.cli import main as cli_main  # noqa: E402
from dualsys.testing.netns import two_hosts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PORT = 5794
BEHAVIOURS = "raise_both_arms,wave_right_hand,touch_blue_box,point_forward"


def run_once(tmp: Path, shift_h: float, episodes: int, behaviours: str) -> dict:
    """One evaluation across the two hosts; returns the eval report."""
    keys = tmp / "keys"
    assert cli_main(["keys", "generate", "--out", str(keys), "--force"]) == 0
    sets = ["security.curve=true", f"security.keys_dir={keys}"]
    env = dict(os.environ, **{config.OVERRIDES_ENV: ";".join(sets)}, PYTHONPATH=str(ROOT))
    py = sys.executable
    with two_hosts() as hosts:
        srv = [py, "-m", "dualsys.cli", "system2", "serve", "--robot", "gr1"]
        srv += ["--bind", f"tcp://{hosts.server_addr}:{PORT}", "--run-dir", str(tmp / "srv")]
        log = (tmp / f"server{shift_h:+g}.log").open("w")
        server = subprocess.Popen(
            hosts.run_in(hosts.server_ns, srv),
            cwd=ROOT,
            env=dict(env, DUALSYS_CLOCK_SHIFT_S=str(shift_h * 3600)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        report = tmp / f"eval{shift_h:+g}.json"
        ev = [py, "-m", "dualsys.cli", "eval", "--robot", "gr1", "--episodes", str(episodes)]
        ev += ["--behaviours", behaviours, "--system2", f"tcp://{hosts.server_addr}:{PORT}"]
        ev += ["--run-dir", str(tmp / "run"), "--report", str(report)]
        try:
            res = subprocess.run(hosts.run_in(hosts.robot_ns, ev), cwd=ROOT, env=env, timeout=900)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        if res.returncode != 0:
            raise SystemExit(f"dualsys eval exited {res.returncode}")
    return json.loads(report.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=2, help="episodes per behaviour")
    ap.add_argument("--behaviours", default=BEHAVIOURS)
    ap.add_argument("--shift", type=float, action="append", help="server clock shift, hours")
    args = ap.parse_args()
    shifts = args.shift or [2.0, -2.0]
    rows = []
    with tempfile.TemporaryDirectory() as tmpd:
        for shift in shifts:
            print(f"[split] server clock {shift:+g} h ...", file=sys.stderr)
            rows.append((shift, run_once(Path(tmpd), shift, args.episodes, args.behaviours)))
    text = header(
        "The trained GR-1 with System 2 on another host, clocks hours apart",
        f".venv/bin/python benchmarks/split.py --episodes {args.episodes} "
        + " ".join(f"--shift {s:g}" for s in shifts),
    )
    text += (
        "Robot side (simulation, System 1, link) and `dualsys system2 serve` (shipped weights) in "
        "two network namespaces joined by a veth pair, CURVE on the tcp link, the server's "
        "monotonic clock shifted. `dualsys eval --system2` scores each episode as the local eval "
        "does.\n\n| server clock | behaviours: success | System 1 misses | latent age p99 (ms) "
        "| measured offset (s) | uncertainty (ms) | round trip p50 (ms) | budgets |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    for shift, rep in rows:
        beh = ", ".join(
            f"{name} {round(b['success_rate'] * b['episodes'])}/{b['episodes']}"
            for name, b in rep["behaviours"].items()
        )
        sysrep = rep["system"]
        s1, link = sysrep["system1"], sysrep.get("link") or {}
        text += (
            f"| {shift:+g} h | {beh} | {s1['deadline_misses']}/{s1['ticks']} | "
            f"{s1['latent_age_ms']['p99']:.0f} | {link.get('offset_s', float('nan')):+.3f} | "
            f"{link.get('offset_uncertainty_ms') or float('nan'):.2f} | "
            f"{(link.get('rtt_ms') or {}).get('p50', float('nan')):.2f} | "
            f"{'all held' if sysrep['budget']['ok'] else 'BROKEN'} |\n"
        )
    write("split", text)


if __name__ == "__main__":
    main()
