"""The System 2 link process (`dualsys system2 link`): run the robot-side link until
signalled, write {run_dir}/link.json.

Exit codes: 0 clean stop, 1 failed at run time, 2 bad configuration (keys, endpoint).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import zmq

from dualsys.config import RobotConfig
from dualsys.rundir import make_run_dir
from dualsys.system2.link import System2Link
from dualsys.timing import pin_to_core, warn_once

SUMMARY = "link"


def write_summary(run_dir: Path, summary: dict[str, object]) -> Path:
    """Write {run_dir}/link.json atomically."""
    path = run_dir / f"{SUMMARY}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def check_server_endpoint(endpoint: str) -> str:
    """A System 2 server endpoint: tcp://HOST:PORT (ValueError naming it otherwise)."""
    if not endpoint.startswith("tcp://") or ":" not in endpoint[len("tcp://") :]:
        raise ValueError(f"System 2 server {endpoint!r}: expected tcp://HOST:PORT")
    return endpoint


def run_link(cfg: RobotConfig, run_dir: Path, server: str, duration_s: float = 0.0) -> int:
    """Run the link until SIGTERM (or SIGINT when standalone) or `duration_s`; exit code."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    supervised = os.environ.get("DUALSYS_SUPERVISED") == "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN if supervised else (lambda *_: stop.set()))
    try:
        check_server_endpoint(server)
    except ValueError as exc:
        print(f"dualsys system2 link: error: {exc}", file=sys.stderr)
        return 2
    make_run_dir(run_dir)
    note = pin_to_core(cfg.cores.system2)
    if note:
        warn_once(f"system2 link: {note}")
    ctx = zmq.Context()
    link = System2Link(cfg, run_dir, server, ctx)
    try:
        link.open()
    except ValueError as exc:  # ConfigError, CurveError: keys, endpoints
        print(f"dualsys system2 link: error: {exc}", file=sys.stderr)
        ctx.destroy(0)
        return 2
    print(f"system2 link: {cfg.name} -> {server}, run dir {run_dir}", flush=True)
    try:
        link.run(stop, duration_s)
    finally:
        link.close()
        ctx.term()
        summary = link.summary()
        path = write_summary(run_dir, summary)
    unc = summary["offset_uncertainty_ms"]
    print(
        f"system2 link: stopped after {summary['latents']} latents; clock offset "
        f"{summary['offset_s']:+.6f} s +- {unc if unc is not None else float('nan'):.3f} ms, "
        f"rtt p50 {summary['rtt_ms']['p50']:.2f} ms; summary {path}",
        flush=True,
    )
    return 1 if link.failed else 0
