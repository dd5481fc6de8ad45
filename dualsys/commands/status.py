"""`dualsys status`: attach to a running `dualsys up` and show its live status."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

import zmq

from dualsys import config
from dualsys.bus import Latent, Stats, Subscriber
from dualsys.bus.limits import receive_spec
from dualsys.liveview import display_text, flat_to_status, headless_line, panel
from dualsys.rundir import default_run_dir
from dualsys.supervisor import STATUS_SOCKET


def server_lines(values: dict[str, float]) -> list[str]:
    """A fleet server's Stats -> one line per robot: rate, latents, input age p99, drops."""
    robots: dict[str, dict[str, float]] = {}
    for key, v in values.items():
        name, sep, field = key.rpartition(".")
        if sep:
            robots.setdefault(name, {})[field] = v
    lines = [
        f"system2 server: {values.get('robots', 0):.0f} robots, {values.get('steps', 0):.0f} steps"
    ]
    for name in sorted(robots):
        r = robots[name]
        age = r.get("age_p99_ms", -1.0)
        lines.append(
            f"  {display_text(name, 64)}: {r.get('rate_hz', 0):.2f} Hz, "
            f"{r.get('latents', 0):.0f} latents, input age p99 "
            f"{'-' if age < 0 else f'{age:.0f} ms'}, dropped {r.get('dropped', 0):.0f}"
        )
    return lines


def _server_status(cfg: config.RobotConfig, args: argparse.Namespace) -> int:
    from dualsys.system2.server_main import STATUS_SOCKET as SERVER_SOCKET

    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name + "-server")
    sock = run_dir / SERVER_SOCKET
    if not sock.exists():
        print(
            f"dualsys status: no System 2 server for {cfg.name} ({sock} missing)", file=sys.stderr
        )
        return 1
    ctx = zmq.Context()
    sub = Subscriber(ctx, f"ipc://{sock}", (Stats,), **receive_spec(cfg, "stats"))
    stop = _stop_on_signals()
    try:
        while not stop.is_set():
            msg = _wait(sub, args.timeout, stop)
            if stop.is_set():
                break
            if msg is None:
                print(f"dualsys status: no status from {sock} in {args.timeout} s", file=sys.stderr)
                return 1
            print("\n".join(server_lines(msg.values)), flush=True)
            if args.once:
                return 0
            stop.wait(2.0)
        return 0
    finally:
        sub.close()
        ctx.destroy(0)


def cmd_status(args: argparse.Namespace) -> int:
    """Show the supervisor's status snapshots until Ctrl-C (or once with --once)."""
    cfg = config.load_robot(args.robot)
    if args.server:
        return _server_status(cfg, args)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name)
    sock = run_dir / STATUS_SOCKET
    if not sock.exists():
        print(f"dualsys status: no running system for {cfg.name} ({sock} missing)", file=sys.stderr)
        return 1
    ctx = zmq.Context()
    sub = Subscriber(ctx, f"ipc://{sock}", (Stats,), **receive_spec(cfg, "stats"))
    latent = Subscriber(
        ctx, cfg.endpoint("latent", run_dir), (Latent,), **receive_spec(cfg, "latent")
    )

    def snapshot(values: dict[str, float]) -> dict:
        snap = flat_to_status(values)
        last = latent.recv_latest() or latent.last
        snap["instruction"] = last.instruction if last is not None else ""
        return snap

    stop = _stop_on_signals()
    try:
        msg = _wait(sub, args.timeout, stop)
        if stop.is_set():
            return 0
        if msg is None:
            print(f"dualsys status: no status from {sock} in {args.timeout} s", file=sys.stderr)
            return 1
        if args.once:
            time.sleep(0.3)  # a latent arrives at 7-10 Hz
            print(headless_line(cfg, snapshot(msg.values)))
            return 0
        from rich.live import Live

        with Live(panel(cfg, snapshot(msg.values)), refresh_per_second=2) as live:
            while not stop.is_set():
                msg = _wait(sub, SILENCE_S, stop)
                if stop.is_set():
                    break
                if msg is None:
                    print("dualsys status: the system stopped reporting", file=sys.stderr)
                    return 1
                live.update(panel(cfg, snapshot(msg.values)))
                stop.wait(0.1)
        return 0
    finally:
        sub.close()
        latent.close()
        ctx.destroy(0)


#: the live panel gives up when the supervisor sends nothing for this long (s)
SILENCE_S = 3.0
#: how often a wait looks at the stop flag (s): Ctrl-C is answered within this
STOP_POLL_S = 0.1


def _stop_on_signals() -> threading.Event:
    """Ctrl-C / SIGTERM set the returned flag instead of raising KeyboardInterrupt wherever the
    main thread happens to be (inside the rich panel's lock, or ZeroMQ), so the panel always
    closes and the process exits 0 at once."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _wait(sub: Subscriber, seconds: float, stop: threading.Event) -> Stats | None:
    """The next valid message within `seconds`, looking at `stop` every STOP_POLL_S."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        msg = sub.recv(timeout_ms=int(min(left, STOP_POLL_S) * 1000))
        if msg is not None:
            return msg
    return None


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `status` subcommand."""
    p = sub.add_parser("status", help="attach to a running system and show its status")
    p.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
    p.add_argument("--run-dir", help="run directory of the running system")
    p.add_argument("--once", action="store_true", help="print one status line and exit")
    p.add_argument(
        "--server",
        action="store_true",
        help="attach to a `dualsys system2 serve` on this computer: per-robot rate, age, drops",
    )
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for status")
    p.set_defaults(func=cmd_status)
