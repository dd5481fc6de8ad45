"""`dualsys up --robot NAME`: bring the whole robot up (supervisor)."""

from __future__ import annotations

import argparse
import sys

from dualsys import config


def cmd_up(args: argparse.Namespace) -> int:
    """Start robot, System 2 and System 1 under the supervisor."""
    cfg = config.load_robot(args.robot)
    print(
        f"dualsys up: robot {cfg.name!r} config is valid, but the supervisor is NOT IMPLEMENTED "
        "yet (missing: MuJoCo simulation, System 2 service, System 1 control loop, supervisor).",
        file=sys.stderr,
    )
    return 3


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `up` subcommand."""
    p = sub.add_parser("up", help="bring the whole robot up (simulation, System 2, System 1)")
    p.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: run)")
    p.set_defaults(func=cmd_up)
