"""A fake System 2: publishes Latent vectors at a fixed rate (default 10 Hz) for tests.

The vector drifts slowly and deterministically (seeded), like a task embedding that changes
when the instruction does. Run it as a process:

    python -m dualsys.testing.latents --robot gr1 --run-dir DIR --duration 20 [--hz 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import numpy as np
import zmq

from dualsys import config
from dualsys.bus.messages import Hello, Latent
from dualsys.bus.transport import Publisher
from dualsys.rundir import default_run_dir, make_run_dir
from dualsys.timing import pin_to_core

ROLE = "system2"


def run_fake_latents(
    cfg: config.RobotConfig,
    run_dir: Path,
    duration_s: float,
    hz: float = 10.0,
    stop_after_s: float | None = None,
    seed: int = 0,
) -> int:
    """Publish latents at `hz` on the latent endpoint (bind) until duration or SIGTERM.

    stop_after_s: stop publishing (but keep running) after this long, to test staleness.
    """
    stop = {"set": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("set", True))
    ctx = zmq.Context()
    pub = Publisher(ctx, cfg.endpoint("latent", run_dir), ROLE, bind=True)
    stats = Publisher(ctx, cfg.endpoint("stats", run_dir), ROLE, bind=False)
    hello = Hello(ROLE, cfg.name, cfg.system2.latent_dim, cfg.n_joints, os.getpid())
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(cfg.system2.latent_dim).astype(np.float32)
    drift = rng.standard_normal(cfg.system2.latent_dim).astype(np.float32)
    period = int(1e9 / hz)
    start = time.monotonic_ns()
    end = start + int(duration_s * 1e9) if duration_s > 0 else 1 << 62
    step = 0
    next_t = start
    while not stop["set"] and next_t < end:
        now = time.monotonic_ns()
        if next_t > now:
            time.sleep((next_t - now) / 1e9)
        t = time.monotonic_ns()
        if stop_after_s is None or t - start < stop_after_s * 1e9:
            vec = base + np.float32(np.sin(step * 0.05)) * drift
            pub.send(
                Latent(
                    vector=vec,
                    instruction_id=1,
                    instruction="test",
                    step=step,
                    state_t_mono_ns=t,
                    frame_t_mono_ns=t,
                )
            )
        if step % max(1, int(hz)) == 0:
            stats.send(hello)
        step += 1
        next_t += period
    pub.close()
    stats.close()
    ctx.term()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line of the fake latent publisher."""
    ap = argparse.ArgumentParser(prog="python -m dualsys.testing.latents")
    ap.add_argument("--robot", default="gr1")
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--duration", type=float, default=0.0)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--stop-after", type=float, default=None)
    ap.add_argument("--core", type=int, default=None, help="pin to this core (default: system2's)")
    args = ap.parse_args(argv)
    cfg = config.load_robot(args.robot)
    run_dir = make_run_dir(args.run_dir or default_run_dir(cfg.name))
    pin_to_core(cfg.cores.system2 if args.core is None else args.core)
    return run_fake_latents(cfg, run_dir, args.duration, args.hz, args.stop_after)


if __name__ == "__main__":
    raise SystemExit(main())
