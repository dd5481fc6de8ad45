"""Record a short live System 1 run: recorder + echo robot + fake latents + policy + control.

python -m tests.reliability.live_run RUN_DIR SECONDS   (writes RUN_DIR/run.mcap)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import zmq

from dualsys import config
from dualsys.bus.messages import Hello, Stats
from dualsys.bus.transport import Subscriber

PY = sys.executable
CFG = config.load_robot("gr1")


def record_live_run(run_dir: Path, seconds: float, timeout_s: float = 60.0) -> dict[str, str]:
    """Run the processes, record `seconds` of control, stop them in supervisor order.

    Returns each process's output; raises RuntimeError if one dies or exits non-zero.
    """
    rd = str(run_dir)
    env = dict(os.environ, DUALSYS_SUPERVISED="1")
    ctx = zmq.Context()
    stats = Subscriber(ctx, CFG.endpoint("stats", rd), (Stats, Hello), bind=True, latest=False)

    def spawn(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [PY, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def wait_hello(roles: set[str], seen: set[str]) -> None:
        end = time.monotonic() + timeout_s
        while not roles <= seen and time.monotonic() < end:
            msg = stats.recv(200)
            if isinstance(msg, Hello):
                seen.add(msg.role)
            for name, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} died: {p.stdout.read().decode()[-2000:]}")
        if not roles <= seen:
            raise RuntimeError(f"no Hello from {roles - seen} within {timeout_s} s")

    seen: set[str] = set()
    procs = {"recorder": spawn("-m", "dualsys.cli", "record", "--run-dir", rd)}
    try:
        wait_hello({"recorder"}, seen)
        time.sleep(0.3)  # the recorder's subscriptions reach the publishers as they bind
        procs["robot"] = spawn("-m", "dualsys.testing.echo_robot", "--run-dir", rd)
        procs["system2"] = spawn("-m", "dualsys.testing.latents", "--run-dir", rd)
        procs["policy"] = spawn(
            "-m", "dualsys.cli", "system1", "policy", "--run-dir", rd, "--untrained-policy"
        )
        procs["control"] = spawn("-m", "dualsys.cli", "system1", "control", "--run-dir", rd)
        wait_hello({"robot", "system2", "policy", "control"}, seen)
        time.sleep(seconds)
    finally:
        for name in ("control", "policy", "system2", "robot", "recorder"):
            if name in procs:
                procs[name].send_signal(signal.SIGTERM)
                try:
                    procs[name].wait(20)
                except subprocess.TimeoutExpired:
                    procs[name].kill()
                    procs[name].wait()
        stats.close()
        ctx.term()
    outs = {n: p.stdout.read().decode() for n, p in procs.items()}
    bad = {n: p.returncode for n, p in procs.items() if p.returncode != 0}
    if bad:
        raise RuntimeError(f"non-zero exits {bad}: {outs}")
    return outs


if __name__ == "__main__":
    out = record_live_run(Path(sys.argv[1]), float(sys.argv[2]))
    print("\n".join(f"{k}: {v.strip()[-300:]}" for k, v in out.items()))
