"""The fleet server process (`dualsys system2 serve`): load and warm the encoder, serve many
robots on one ROUTER, print a per-robot line every 5 s, write {run_dir}/server.json.

Exit codes: 0 clean stop, 2 bad configuration (checkpoint, keys, endpoint).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import zmq

from dualsys.bus import Publisher, Stats
from dualsys.bus.curve import BusSecurity
from dualsys.config import RobotConfig
from dualsys.rundir import make_run_dir
from dualsys.system2.server import FleetServer

SUMMARY = "server"
STATUS_EVERY_S = 5.0
STATUS_PUBLISH_S = 0.5
#: the server's status socket in its run directory (`dualsys status --server` reads it)
STATUS_SOCKET = "status.sock"


def status_line(server: FleetServer) -> str:
    """One line: per robot, latents so far, input age p99 and drops."""
    parts = [
        f"{s.name}: {s.latents} latents, age p99 "
        f"{(s.age_us.pct(99) / 1000 if s.age_us.count else float('nan')):.0f} ms, "
        f"{sum(s.dropped.values())} dropped"
        for s in server.slots.values()
    ]
    return f"system2 server: {len(server.slots)} robots; " + ("; ".join(parts) or "none")


def run_server(
    cfg: RobotConfig,
    run_dir: Path,
    bind: str,
    *,
    duration_s: float = 0.0,
    untrained: bool = False,
    encoder_name: str | None = None,
    max_robots: int = 16,
    idle_s: float = 3.0,
) -> int:
    """Serve robots until SIGTERM/SIGINT or `duration_s`; returns the exit code."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    make_run_dir(run_dir)
    import torch

    from dualsys.system2 import encoders
    from dualsys.system2.encoders.hf import ModelDirError
    from dualsys.system2.fusion import FusionError

    torch.set_num_threads(int(os.environ.get("DUALSYS_SERVER_THREADS", "1")))
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    ctx = zmq.Context()
    try:
        encoder = encoders.create(cfg, untrained=untrained, name=encoder_name)
        encoder.configure()
        encoder.warmup()
        sec = BusSecurity(ctx, cfg, role="system2", connects=False)
        server = FleetServer(cfg, encoder, ctx, max_robots=max_robots, idle_s=idle_s)
        server.open(bind, sec.curve(bind, bind=True, link="fleet"))
    except (FusionError, ModelDirError, KeyError, ImportError, ValueError, zmq.ZMQError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) else exc
        print(f"dualsys system2 serve: error: {msg}", file=sys.stderr)
        ctx.destroy(0)
        return 2
    print(
        f"system2 server: serving {cfg.name} robots on {bind} ({encoder.description}; "
        f"{cfg.rates.system2_target_hz:g} Hz, up to {max_robots} robots, "
        f"CURVE {'on' if server.curve else 'OFF'})",
        flush=True,
    )
    next_line = [time.monotonic() + STATUS_EVERY_S]
    # per-robot numbers for `dualsys status --server` (ipc, local only, like the supervisor's)
    status_pub = Publisher(ctx, f"ipc://{run_dir}/{STATUS_SOCKET}", "server", hwm=8)
    next_pub = [time.monotonic()]

    def tick() -> None:
        now = time.monotonic()
        if now >= next_pub[0]:
            status_pub.send(Stats(process="server", values=server.stats_values()))
            next_pub[0] = now + STATUS_PUBLISH_S
        if now >= next_line[0]:
            print(status_line(server), flush=True)
            next_line[0] = now + STATUS_EVERY_S

    try:
        server.run(stop, duration_s, on_tick=tick)
    finally:
        status_pub.close()
        server.close()
        sec.close()
        ctx.term()
        path = run_dir / f"{SUMMARY}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(server.summary(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    print(f"{status_line(server)}; summary {path}", flush=True)
    return 0
