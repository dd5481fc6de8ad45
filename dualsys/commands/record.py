"""`dualsys record --out run.mcap`: record every bus topic of a running system to MCAP."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualsys import config
from dualsys.rundir import default_run_dir, make_run_dir


def cmd_record(args: argparse.Namespace) -> int:
    """Run the recorder process (role "recorder") until the duration ends or SIGTERM."""
    from dualsys.record import run_recorder

    cfg = config.load_robot(args.robot)
    run_dir = make_run_dir(Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name))
    out = Path(args.out) if args.out else run_dir / "run.mcap"
    return run_recorder(cfg, run_dir, out, args.duration)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `record`."""
    p = sub.add_parser("record", help="record every bus topic to an MCAP file")
    p.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
    p.add_argument("--run-dir", default=None, help="run directory (default: per user/robot)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until signalled")
    p.add_argument(
        "--out",
        default=None,
        help="MCAP file (default: RUN_DIR/run.mcap); an existing file is kept and the "
        "recording goes to NAME.1.mcap, NAME.2.mcap, ...",
    )
    p.set_defaults(func=cmd_record)
