"""The `dualsys` command line: one CLI, one subcommand per module in `dualsys.commands`.

Each module in `dualsys/commands/` defines `register(subparsers)` that adds its subcommand and
sets `func` to a thin function over library calls (tests call those functions directly).
Subcommands import heavy libraries (torch, mujoco) lazily, so `dualsys --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from dualsys import __version__, commands
from dualsys.config import ConfigError
from dualsys.rundir import RunDirError

#: Exit codes: 0 ok, 1 run failed, 2 bad input/config, 3 not implemented yet.
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_IMPLEMENTED = 0, 1, 2, 3


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand found in dualsys.commands; when `argv` names
    a subcommand whose module has that name (`dualsys system1 control ...`), only that module
    is imported, so a runtime process never imports another command's modules (`train`'s
    recipe is the learning wing's)."""
    parser = argparse.ArgumentParser(
        prog="dualsys",
        description="Dual-system real-time control runtime for humanoid robots "
        "(System 2 VLM at 7-10 Hz, System 1 policy at 200 Hz).",
    )
    parser.add_argument("--version", action="version", version=f"dualsys {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = sorted(m.name for m in pkgutil.iter_modules(commands.__path__))
    first = next((a for a in argv or [] if not a.startswith("-")), None)
    for name in [first] if first in names else names:
        module = importlib.import_module(f"{commands.__name__}.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dualsys` console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (ConfigError, RunDirError) as exc:  # RunDirError: foreign/busy run dir, bad name
        print(f"dualsys: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
