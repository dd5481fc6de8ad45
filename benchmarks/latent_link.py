"""The latent link in the running system: System 1 reading the shm slot vs ZeroMQ ipc://.

Runs `dualsys up` (simulated GR-1, untrained weights, headless) alternately with the robot
config's `latent_local` slot and without it (`--set endpoints.latent_local=`: ZeroMQ only),
and prints side by side, per run, from the control and policy summaries: which path the
latents came by, the control tick's `latent` stage (receiving the latent inside the tick) and
the latent age System 1 saw. Must run on a quiet machine (wrap it in the real-time lock).

    .venv/bin/python benchmarks/latent_link.py [--runs 2] [--duration 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = {"shm slot": [], "zmq ipc only": ["--set", "endpoints.latent_local="]}


def _run(mode: list[str], duration: float, tmp: Path) -> dict:
    run = tmp / "run"
    cmd = [sys.executable, "-m", "dualsys.cli", "up", "--robot", "gr1", "--headless"]
    cmd += ["--untrained", "--duration", str(duration), "--run-dir", str(run), *mode]
    cmd += ["--log-dir", str(tmp / "logs")]
    subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 200, check=True)
    control = json.loads((run / "control.json").read_text())
    policy = json.loads((run / "policy.json").read_text())
    return {"control": control, "policy": policy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="runs per mode (alternating)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    args = ap.parse_args()
    print("| mode | control via shm/zmq | policy via shm/zmq | tick latent stage p50 / p99 "
          "/ max µs | latent age p50 / p99 ms | deadline misses |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for _ in range(args.runs):
        for name, mode in MODES.items():
            with tempfile.TemporaryDirectory() as tmp:
                r = _run(mode, args.duration, Path(tmp))
            c, p = r["control"], r["policy"]
            st, age = c["tick_stages_us"]["latent"], c["latent_age_ms"]
            cv, pv = c["latent_link"], p["latent_link"]
            print(
                f"| {name} | {cv['shm']} / {cv['zmq']} | {pv['shm']} / {pv['zmq']} | "
                f"{st['p50']:.1f} / {st['p99']:.1f} / {st['max']:.0f} | "
                f"{age['p50']:.1f} / {age['p99']:.1f} | {c['deadline_misses']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
