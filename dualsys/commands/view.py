"""`dualsys view`: the web view (Rerun) of a running system or of a recording.

dualsys view --robot gr1               attach to the running system (what `up --view` starts)
dualsys view run.mcap                  a recording, served with a timeline to scrub
dualsys view run.mcap --save run.rrd   ... written to Rerun's file (open: rerun run.rrd)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dualsys import config
from dualsys.view import EXIT_NO_VIEWER, INSTALL_HINT, have_viewer


def no_viewer(command: str) -> int:
    """Say exactly how to get the view; the exit code for a --view without the extra."""
    print(f"dualsys {command}: error: {INSTALL_HINT}", file=sys.stderr)
    return EXIT_NO_VIEWER


def cmd_view(args: argparse.Namespace) -> int:
    """Entry of `dualsys view`."""
    if not have_viewer():
        return no_viewer("view")
    if args.file:
        return view_file(args)
    from dualsys.rundir import default_run_dir, make_run_dir
    from dualsys.view.live import run_viewer

    cfg = config.load_robot(args.robot or "gr1")
    run_dir = make_run_dir(Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name))
    save = Path(args.save) if args.save else None
    return run_viewer(
        cfg,
        run_dir,
        args.duration,
        args.web_port,
        args.grpc_port,
        args.host,
        save,
        grounding=not args.no_grounding,
    )


def view_file(args: argparse.Namespace) -> int:
    """A recording: to --save, and served unless --no-serve."""
    from dualsys.replay import ReplayError, read_mcap
    from dualsys.view.live import page_url
    from dualsys.view.offline import view_recording

    try:
        rec = read_mcap(args.file)
    except ReplayError as exc:
        print(f"dualsys view: error: {exc}", file=sys.stderr)
        return 2
    cfg = config.load_robot(args.robot or rec.robot or "gr1")
    save = Path(args.save) if args.save else None
    serve = None if args.no_serve else (args.web_port, args.grpc_port, args.host)
    if save is None and serve is None:
        print("dualsys view: error: --no-serve without --save shows nothing", file=sys.stderr)
        return 2
    counts = view_recording(cfg, rec, save, serve)
    print(f"dualsys view: {args.file}: {counts}", file=sys.stderr)
    if save is not None:
        print(f"dualsys view: saved {save} (open it with: rerun {save})", file=sys.stderr)
    if serve is not None:
        url = page_url(args.host, args.web_port, args.grpc_port)
        print(f"dualsys view: open {url}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
        end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
        try:
            while time.monotonic() < end:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
    return 0


def add_view_options(p: argparse.ArgumentParser) -> None:
    """The view's ports and host (shared by `view`, `up --view`, `replay --view`, ...)."""
    from dualsys.view.live import GRPC_PORT, WEB_PORT

    p.add_argument("--web-port", type=int, default=WEB_PORT, help="viewer page port")
    p.add_argument("--grpc-port", type=int, default=GRPC_PORT, help="viewer data port")
    p.add_argument(
        "--host",
        default="localhost",
        help="host name printed in the URL (both ports listen on every interface)",
    )


def add_live_view_options(p: argparse.ArgumentParser) -> None:
    """`--view` and its options for commands that start a live system (up, eval, sim)."""
    from dualsys.view.live import GRPC_PORT, WEB_PORT

    p.add_argument(
        "--view",
        action="store_true",
        help="serve a live web view (Rerun) of the robot and print its URL (needs the 'view' "
        "extra: pip install 'dualsys[view]' or bin/setup --view)",
    )
    p.add_argument("--view-port", type=int, default=WEB_PORT, help="--view: page port")
    p.add_argument("--view-grpc-port", type=int, default=GRPC_PORT, help="--view: data port")
    p.add_argument("--view-host", default="localhost", help="--view: host name in the URL")
    p.add_argument("--view-save", default=None, help="--view: also write a Rerun .rrd file")


def viewer_args(args: argparse.Namespace) -> list[str]:
    """The `dualsys view` arguments for the viewer process the supervisor starts."""
    out = ["--web-port", str(args.view_port), "--grpc-port", str(args.view_grpc_port)]
    out += ["--host", args.view_host]
    return out + (["--save", str(Path(args.view_save).resolve())] if args.view_save else [])


def register(sub: argparse._SubParsersAction) -> None:
    """Add `view`."""
    p = sub.add_parser(
        "view",
        help="web view (Rerun) of the running system, or of a recording with a timeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", nargs="?", help="MCAP recording (default: the running system)")
    p.add_argument("--robot", default=None, help="robot config (default: gr1 / the recorded)")
    p.add_argument("--run-dir", default=None, help="run directory of the running system")
    p.add_argument("--save", default=None, help="also write the view to this Rerun .rrd file")
    p.add_argument("--no-serve", action="store_true", help="a recording: only --save")
    p.add_argument(
        "--no-grounding",
        action="store_true",
        help="live: do not show System 2's grounding of the instruction (untrained runs)",
    )
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until signalled")
    add_view_options(p)
    p.set_defaults(func=cmd_view)
