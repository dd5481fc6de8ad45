"""A light robot stand-in for a System 2 fleet server: real-sized frames and states over its
own DEALER (its own CURVE key), and what latents come back.

It speaks the link protocol (dualsys/system2/link.py, dualsys/bus/remote.py) without a
simulation: Hello and its instruction every second, a camera frame at `hz` and a state at
2 x `hz` (or, with `flood`, frames as fast as the socket takes them), and it records every
RemoteLatent: the instruction it carries and its age on arrival, measured on this process's
clock only (arrival time minus the send time of the frame it was computed from).

Run as a process (tests, benchmarks/fleet.py):
    python -m dualsys.testing.fleet_robot --server tcp://127.0.0.1:5650 --keys-dir K \
        --key NAME --instruction "wave" --duration 10 --out robot.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import zmq

from dualsys import config
from dualsys.bus import CameraFrame, Hello, Instruction, RobotState
from dualsys.bus.codec import DropError, decode, encode
from dualsys.bus.curve import CurveConfig, load_pair
from dualsys.bus.remote import RemoteLatent, remote_latent_limits
from dualsys.system2.link import dealer
from dualsys.timing import Histogram


def run(
    server: str,
    keys_dir: Path | None,
    key: str,
    instruction: str,
    duration_s: float,
    *,
    robot: str = "gr1",
    hz: float = 10.0,
    flood: bool = False,
    routing_id: bytes | None = None,
) -> dict[str, object]:
    """Act as one robot for `duration_s`; returns what it measured."""
    cfg = config.load_robot(robot)
    cam, n = cfg.cameras[0], cfg.n_joints
    curve = None
    if keys_dir is not None:
        curve = CurveConfig(
            client=load_pair(keys_dir, key, secret=True),
            server_public=load_pair(keys_dir, "system2", secret=False).public,
        )
    limits = remote_latent_limits(cfg.system2.latent_dim, cfg.system2.max_instruction_chars)
    ctx = zmq.Context()
    if routing_id is not None:  # claim another robot's connection name (tests)
        ctx.setsockopt(zmq.ROUTING_ID, routing_id)
    sock = dealer(ctx, server, curve, limits.max_bytes)
    rng = np.random.default_rng(abs(hash(key)) % 2**32)
    image = rng.integers(0, 256, (cam.height, cam.width, 3), dtype=np.uint8)
    q = cfg.limits()["default"].copy()
    hello = Hello("system2", cfg.name, cfg.system2.latent_dim, n, os.getpid())
    ins = Instruction(text=instruction, id=1)
    seq, sent, not_sent = 0, 0, 0
    ages, instructions = Histogram(), {}
    got, first, last = 0, 0, 0
    frame_every = 1e9 / hz
    end = time.monotonic_ns() + int(duration_s * 1e9)
    next_frame = next_state = next_hello = time.monotonic_ns()
    while (now := time.monotonic_ns()) < end:
        out = []
        if now >= next_hello:
            out += [hello, ins]
            next_hello = now + 1_000_000_000
        if flood or now >= next_frame:
            out.append(CameraFrame(camera=cam.name, image=image, sim_time=now / 1e9))
            next_frame = now + frame_every
        if now >= next_state:
            q[0] = np.sin(now / 1e9) * 0.01
            out.append(RobotState(q=q, dq=q * 0, tau=q * 0, sim_time=now / 1e9))
            next_state = now + frame_every / 2
        for msg in out:
            seq += 1
            try:
                sock.send(encode(msg, seq, key, t_mono_ns=time.monotonic_ns()), zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                not_sent += 1
        wait = 0 if flood else max(0, min(next_frame, next_state) - time.monotonic_ns())
        if sock.poll(int(wait / 1e6)):
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                t4 = time.monotonic_ns()
                try:
                    msg = decode(data, (RemoteLatent, Hello), limits=limits)
                except DropError:
                    continue
                if isinstance(msg, RemoteLatent):
                    got += 1
                    first, last = first or t4, t4
                    ages.record(max(0, t4 - msg.frame_t1_ns) // 1000)
                    instructions[msg.instruction] = instructions.get(msg.instruction, 0) + 1
    sock.close(0)
    ctx.term()
    return {
        "key": key,
        "latents": got,
        "rate_hz": (got - 1) * 1e9 / (last - first) if got > 1 else 0.0,
        "age_ms": ages.summary(1000.0),
        "instructions": instructions,
        "sent": sent,
        "not_sent": not_sent,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True)
    p.add_argument("--keys-dir", default=None, help="CURVE keys (none: insecure tcp)")
    p.add_argument("--key", required=True, help="this robot's key name in keys-dir")
    p.add_argument("--instruction", default="wave the right hand")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--flood", action="store_true")
    p.add_argument("--routing-id", default=None)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    res = run(
        a.server,
        Path(a.keys_dir) if a.keys_dir else None,
        a.key,
        a.instruction,
        a.duration,
        hz=a.hz,
        flood=a.flood,
        routing_id=a.routing_id.encode() if a.routing_id else None,
    )
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
