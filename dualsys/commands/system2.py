"""`dualsys system2`: run the System 2 vision-language service (role "system2").

`dualsys system2 serve`: one System 2 server for many robots (GPU computer).
`dualsys system2 link --server tcp://HOST:PORT`: the robot side of a remote System 2
(`dualsys up --system2 tcp://HOST:PORT` runs it for you).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dualsys import config
from dualsys.rundir import default_run_dir, exit_now
from dualsys.timing import prioritise_process


def cmd_system2(args: argparse.Namespace) -> int:
    """Load the robot config and serve System 2 until signalled or for --duration seconds."""
    cfg = config.load_robot(args.robot)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name)
    from dualsys.system2.main import serve

    prioritise_process()
    exit_now(serve(cfg, run_dir, args.duration, args.untrained, args.encoder))
    return 1  # not reached


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve System 2 for every robot whose key is authorized, batched."""
    cfg = config.load_robot(args.robot)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name + "-server")
    from dualsys.system2.server_main import run_server

    exit_now(
        run_server(
            cfg,
            run_dir,
            args.bind,
            duration_s=args.duration,
            untrained=args.untrained,
            encoder_name=args.encoder,
            max_robots=args.max_robots,
            idle_s=args.idle,
        )
    )
    return 1  # not reached


def cmd_link(args: argparse.Namespace) -> int:
    """Run the robot-side link to a System 2 server."""
    cfg = config.load_robot(args.robot)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name)
    from dualsys.system2.link_main import run_link

    exit_now(run_link(cfg, run_dir, args.server, args.duration))
    return 1  # not reached


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
    p.add_argument("--run-dir", default=None, help="run directory (default: per user and robot)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until signal)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `system2` subcommand."""
    p = sub.add_parser(
        "system2", help="run System 2: camera + state + instruction -> latent at 7-10 Hz"
    )
    p.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
    p.add_argument("--run-dir", default=None, help="run directory (default: per user and robot)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until signal)")
    p.add_argument(
        "--untrained",
        action="store_true",
        help="no fusion checkpoint: use the documented seeded random init (same inputs give "
        "the same latent, but it means nothing yet)",
    )
    p.add_argument(
        "--encoder", default=None, help="encoder registry name (default: system2.encoder)"
    )
    p.set_defaults(func=cmd_system2)
    modes = p.add_subparsers(dest="mode", metavar="{serve,link}")
    serve = modes.add_parser("serve", help="one System 2 server for a fleet of robots (batched)")
    _common(serve)
    serve.add_argument("--bind", default="tcp://*:5650", help="ROUTER endpoint (tcp://*:PORT)")
    serve.add_argument("--max-robots", type=int, default=16, help="robots served at once")
    serve.add_argument(
        "--idle", type=float, default=3.0, help="a robot silent this long (s) loses its slot"
    )
    serve.add_argument("--untrained", action="store_true", help="seeded random fusion head")
    serve.add_argument("--encoder", default=None, help="encoder registry name")
    serve.set_defaults(func=cmd_serve)
    link = modes.add_parser("link", help="robot side of a remote System 2 server")
    _common(link)
    link.add_argument("--server", required=True, help="the server, tcp://HOST:PORT")
    link.set_defaults(func=cmd_link)
