"""A kinematic robot for tests: publishes RobotState at state_hz echoing the commanded pose.

Binds the state PUB and the command SUB's peer (it connects to the control process's command
endpoint), starts at the default pose, and on each tick reports the last commanded q and dq
(mode "hold" keeps the current pose). Optionally records every command received
(time, tick, mode, q, dq) to an .npz file at exit, for smoothness checks.

    python -m dualsys.testing.echo_robot --robot gr1 --run-dir DIR --duration 20 [--record F]
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
from dualsys.bus.limits import receive_spec
from dualsys.bus.messages import Command, Hello, RobotState
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.rundir import default_run_dir, make_run_dir
from dualsys.timing import pin_to_core

ROLE = "robot"
MODE_CODES = {"run": 0, "hold": 1, "damp": 2}


def run_echo_robot(
    cfg: config.RobotConfig,
    run_dir: Path,
    duration_s: float,
    record: Path | None = None,
    max_records: int = 200_000,
) -> int:
    """Run until duration or SIGTERM; returns 0."""
    stop = {"set": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("set", True))
    n = cfg.n_joints
    ctx = zmq.Context()
    state_pub = Publisher(ctx, cfg.endpoint("state", run_dir), ROLE, bind=True)
    stats = Publisher(ctx, cfg.endpoint("stats", run_dir), ROLE, bind=False)
    cmd_sub = Subscriber(
        ctx,
        cfg.endpoint("command", run_dir),
        (Command,),
        latest=False,
        **receive_spec(cfg, "command"),
    )
    hello = Hello(ROLE, cfg.name, cfg.system2.latent_dim, n, os.getpid())
    q = cfg.limits()["default"].copy()
    dq = np.zeros(n)
    mode = "hold"
    rec_t = np.zeros(max_records, np.int64) if record else None
    rec_tick = np.zeros(max_records, np.int64) if record else None
    rec_mode = np.zeros(max_records, np.int8) if record else None
    rec_q = np.zeros((max_records, n), np.float64) if record else None
    rec_dq = np.zeros((max_records, n), np.float64) if record else None
    nrec = 0
    period = 1_000_000_000 // cfg.rates.state_hz
    start = time.monotonic_ns()
    end = start + int(duration_s * 1e9) if duration_s > 0 else 1 << 62
    next_t = start
    step = 0
    while not stop["set"] and next_t < end:
        now = time.monotonic_ns()
        if next_t > now:
            time.sleep((next_t - now) / 1e9)
        while True:
            try:
                data = cmd_sub.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            msg = cmd_sub._accept(data)
            if msg is None:
                continue
            mode = msg.mode
            if mode == "run" or mode == "hold":
                q[:] = msg.q
                dq[:] = msg.dq
            if rec_q is not None and nrec < max_records:
                rec_t[nrec] = msg.header.t_mono_ns
                rec_tick[nrec] = msg.tick
                rec_mode[nrec] = MODE_CODES.get(msg.mode, 9)
                rec_q[nrec] = msg.q
                rec_dq[nrec] = msg.dq
                nrec += 1
        state_pub.send(
            RobotState(q=q, dq=dq, tau=np.zeros(n), sim_time=step * period / 1e9, mode=mode)
        )
        if step % cfg.rates.state_hz == 0:
            stats.send(hello)
        step += 1
        next_t += period
    if record:
        np.savez(
            record,
            t_ns=rec_t[:nrec],
            tick=rec_tick[:nrec],
            mode=rec_mode[:nrec],
            q=rec_q[:nrec],
            dq=rec_dq[:nrec],
        )
    for s in (state_pub, stats, cmd_sub):
        s.close()
    ctx.term()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line of the echo robot."""
    ap = argparse.ArgumentParser(prog="python -m dualsys.testing.echo_robot")
    ap.add_argument("--robot", default="gr1")
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--duration", type=float, default=0.0)
    ap.add_argument("--record", type=Path, default=None, help="write received commands (.npz)")
    ap.add_argument("--core", type=int, default=None, help="pin to this core (default: robot's)")
    args = ap.parse_args(argv)
    cfg = config.load_robot(args.robot)
    run_dir = make_run_dir(args.run_dir or default_run_dir(cfg.name))
    pin_to_core(cfg.cores.robot if args.core is None else args.core)
    return run_echo_robot(cfg, run_dir, args.duration, args.record)


if __name__ == "__main__":
    raise SystemExit(main())
