"""`dualsys say "wave with the right hand"`: give a running System 2 a new instruction."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dualsys import config
from dualsys.rundir import default_run_dir


def cmd_say(args: argparse.Namespace) -> int:
    """Send the instruction; 0 once System 2 publishes a latent with it, 1 on timeout, 2 if bad."""
    from dualsys.system2.client import send_instruction
    from dualsys.system2.instruction import InstructionError

    cfg = config.load_robot(args.robot)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name)
    text = " ".join(args.text)
    try:
        ident, latent = send_instruction(cfg, run_dir, text, timeout_s=args.timeout)
    except InstructionError as exc:
        print(f"dualsys say: error: {exc}", file=sys.stderr)
        return 2
    if latent is None:
        print(
            f"dualsys say: error: no System 2 adopted instruction #{ident} within "
            f"{args.timeout:g} s (is `dualsys system2` running with run dir {run_dir}?)",
            file=sys.stderr,
        )
        return 1
    print(f"instruction #{ident} adopted by System 2 (step {latent.step}): {latent.instruction!r}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `say` subcommand."""
    p = sub.add_parser("say", help="send an instruction to the running System 2")
    p.add_argument("text", nargs="+", help="the instruction (words are joined by spaces)")
    p.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
    p.add_argument("--run-dir", default=None, help="run directory (default: per user and robot)")
    p.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for System 2 to adopt it"
    )
    p.set_defaults(func=cmd_say)
