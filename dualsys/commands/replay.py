"""`dualsys replay run.mcap`: re-run a recorded control run offline and compare the commands."""

from __future__ import annotations

import argparse
import json
import sys

from dualsys import config


def cmd_replay(args: argparse.Namespace) -> int:
    """Print the comparison; 0 when it ran (1 with --require-identical and a difference).
    With --view, then show the recording in the web view (`dualsys view FILE`)."""
    if args.view:
        from dualsys.commands.view import no_viewer
        from dualsys.view import have_viewer

        if not have_viewer():
            return no_viewer("replay")
    from dualsys.replay import (
        DEFAULT_TRANSIT_NS,
        ReplayError,
        TickTable,
        control_run,
        infer_ticks,
        read_mcap,
        replay,
    )

    try:
        rec = read_mcap(args.file)
        cfg = config.load_robot(args.robot or rec.robot or "gr1")
        table = None  # default: the tick inputs the recorded Commands carry
        if args.ticks:
            table = TickTable.load(args.ticks)
        elif args.infer:
            loop_cmds, _ = control_run(rec)
            transit = int(args.transit_us * 1000) if args.transit_us is not None else None
            table = infer_ticks(
                rec,
                loop_cmds,
                cfg.rates.control_period_ns,
                DEFAULT_TRANSIT_NS if transit is None else transit,
                args.origin_ns,
            )
        result = replay(cfg, rec, table)
    except config.ConfigError:
        raise  # the CLI reports it (file, key, reason)
    except (ReplayError, OSError, KeyError, ValueError) as exc:
        print(f"dualsys: error: {exc}", file=sys.stderr)
        return 2
    out = result.summary()
    out["file"] = str(args.file)
    out["robot"] = cfg.name
    print(json.dumps(out, indent=1))
    if args.view:
        from dualsys.commands.view import view_file

        args.file, args.no_serve, args.duration = str(args.file), False, 0.0
        code = view_file(args)
        if code:
            return code
    if args.require_identical and not result.bit_identical:
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `replay`."""
    p = sub.add_parser(
        "replay", help="feed a recorded run's chunks/latents/states through System 1 offline"
    )
    p.add_argument("file", help="MCAP file written by `dualsys record` / `dualsys up --record`")
    p.add_argument("--robot", default=None, help="robot config (default: the one recorded)")
    p.add_argument(
        "--ticks", default=None, help="per-tick inputs from a file (.npz, TickTable.save)"
    )
    p.add_argument(
        "--infer",
        action="store_true",
        help="estimate the tick inputs from send times instead of the recorded ones "
        "(approximate; for recordings whose commands carry no tick data)",
    )
    p.add_argument(
        "--origin-ns", type=int, default=None, help="--infer: the loop's first deadline, if known"
    )
    p.add_argument(
        "--transit-us", type=float, default=None, help="--infer: bus transit time (default 200)"
    )
    p.add_argument("--require-identical", action="store_true", help="exit 1 unless bit-identical")
    p.add_argument(
        "--view", action="store_true", help="then show the recording in the web view (Rerun)"
    )
    p.add_argument("--save", default=None, help="--view: also write a Rerun .rrd file")
    from dualsys.commands.view import add_view_options

    add_view_options(p)
    p.set_defaults(func=cmd_replay)
