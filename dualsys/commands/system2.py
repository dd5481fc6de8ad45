"""`dualsys system2`: run the System 2 vision-language service (role "system2")."""

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
