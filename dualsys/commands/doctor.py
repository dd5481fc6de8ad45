"""`dualsys doctor --robot gr1`: can this computer hold the robot's timing budgets?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dualsys import config


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check and probe the machine against the robot config; print the report, write JSON.

    Exit 0 when the run completed and no budget is 'cannot hold' at the configured rate, 1 when
    one is (or a probe failed), 2 on bad input.
    """
    from dualsys.doctor.run import run_doctor
    from dualsys.doctor.summary import save_last
    from dualsys.doctor.table import render

    cfg = config.load_robot(args.robot)
    if args.seconds <= 0:
        print("dualsys doctor: error: --seconds: expected a positive number", file=sys.stderr)
        return 2
    rates = [cfg.rates.control_hz] if args.control_rate_only else None
    print(f"dualsys doctor: checking this machine for {cfg.name} ...", file=sys.stderr)
    try:
        result = run_doctor(
            cfg,
            args.seconds,
            load=not args.no_load,
            fifo=not args.no_fifo,
            hold_dma=not args.no_dma_hold,
            probe_kind=args.probe,
            rates=rates,
        )
    except ValueError as exc:
        print(f"dualsys doctor: error: {exc}", file=sys.stderr)
        return 2
    print(render(result))
    save_last(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"dualsys doctor: wrote {args.json}", file=sys.stderr)
    return 1 if result["verdict"] == "cannot hold" or result["errors"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `doctor` subcommand."""
    p = sub.add_parser(
        "doctor",
        help="check and measure this machine against a robot's timing budgets",
        description="Static checks (FIFO rights, preemption, isolation, SMT, governor, idle "
        "states, virtualisation), a cyclictest-style probe on every configured core at the "
        "control rate, 500 Hz and 1 kHz, quiet and under load, and a verdict per budget.",
    )
    p.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
    p.add_argument("--json", default=None, help="write the full result as JSON to this path")
    p.add_argument(
        "--seconds",
        type=float,
        default=12.0,
        help="probe seconds per condition at the control rate (default 12; 500 Hz and 1 kHz "
        "get a quarter each; total about 3x this with load, 1.5x with --no-load)",
    )
    p.add_argument("--no-load", action="store_true", help="probe only the quiet machine")
    p.add_argument("--no-fifo", action="store_true", help="probe on normal scheduling")
    p.add_argument(
        "--no-dma-hold", action="store_true", help="do not hold /dev/cpu_dma_latency at 0"
    )
    p.add_argument(
        "--probe",
        choices=("c", "cyclictest", "python"),
        default=None,
        help="force a probe form (default: compiled C, else cyclictest, else Python)",
    )
    p.add_argument(
        "--control-rate-only", action="store_true", help="skip the 500 Hz and 1 kHz rows"
    )
    p.set_defaults(func=cmd_doctor)
