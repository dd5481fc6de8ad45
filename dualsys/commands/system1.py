"""`dualsys system1 control|policy`: System 1's two processes (200 Hz loop, chunk policy)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualsys import config
from dualsys.rundir import default_run_dir, exit_now, make_run_dir
from dualsys.timing import prioritise_process


def _common(args: argparse.Namespace) -> tuple[config.RobotConfig, Path]:
    cfg = config.load_robot(args.robot)
    run_dir = make_run_dir(Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name))
    return cfg, run_dir


def cmd_control(args: argparse.Namespace) -> int:
    """Run the 200 Hz control process."""
    from dualsys.system1.control_proc import run_control

    cfg, run_dir = _common(args)
    exit_now(run_control(cfg, run_dir, args.duration, fifo=not args.no_fifo))
    return 1  # not reached


def cmd_policy(args: argparse.Namespace) -> int:
    """Run the policy process (chunks with real-time chunking)."""
    from dualsys.system1.policy_proc import run_policy

    cfg, run_dir = _common(args)
    prioritise_process()
    exit_now(run_policy(cfg, run_dir, args.duration, untrained=args.untrained_policy))
    return 1  # not reached


def register(sub: argparse._SubParsersAction) -> None:
    """Add `system1 control` and `system1 policy`."""
    p = sub.add_parser("system1", help="System 1 processes: the 200 Hz control loop, the policy")
    s1 = p.add_subparsers(dest="system1_command", metavar="PROCESS", required=True)
    for name, func, text in (
        ("control", cmd_control, "the 200 Hz control process (SCHED_FIFO where permitted)"),
        ("policy", cmd_policy, "the policy process (flow-matching chunks, real-time chunking)"),
    ):
        q = s1.add_parser(name, help=text)
        q.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
        q.add_argument("--run-dir", default=None, help="run directory (default: per user/robot)")
        q.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until signalled")
        if name == "control":
            q.add_argument("--no-fifo", action="store_true", help="do not ask for SCHED_FIFO")
        else:
            q.add_argument(
                "--untrained-policy",
                action="store_true",
                help="run a random-init policy when no checkpoint is configured (timing only)",
            )
        q.set_defaults(func=func)
