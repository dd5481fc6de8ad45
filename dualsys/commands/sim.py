"""`dualsys sim --robot gr1`: run the robot process (MuJoCo simulation by default) on its own."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dualsys import config
from dualsys.rundir import default_run_dir, exit_now, make_run_dir
from dualsys.timing import prioritise_process


def cmd_sim(args: argparse.Namespace) -> int:
    """Run the simulation (or the configured driver) until SIGTERM/SIGINT or --duration."""
    cfg = config.load_robot(args.robot)
    if args.view:
        from dualsys.commands.view import no_viewer
        from dualsys.view import have_viewer

        if not have_viewer():
            return no_viewer("sim")
    if args.window:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            print("dualsys sim: error: --window needs a display (no DISPLAY)", file=sys.stderr)
            return 2
        os.environ["MUJOCO_GL"] = "glfw"  # a window needs GLFW; set before mujoco is imported
    from dualsys.robot.model import ModelMismatchError
    from dualsys.robot.process import run_robot

    run_dir = make_run_dir(Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name))
    viewer = None
    if args.view:
        from dualsys.commands.view import viewer_args
        from dualsys.view.spawn import start_viewer

        viewer = start_viewer(cfg, run_dir, viewer_args(args))
    prioritise_process()
    try:
        summary = run_robot(
            cfg,
            run_dir,
            args.duration,
            driver_name=args.driver,
            realtime=not args.no_rt,
            view=args.window,
        )
    except (ModelMismatchError, KeyError, FileNotFoundError, TimeoutError, RuntimeError) as exc:
        print(f"dualsys sim: error: {exc}", file=sys.stderr)
        return 2
    from dualsys.view.spawn import stop_viewer

    stop_viewer(viewer)
    keys = ("realtime_factor", "physics_steps", "frames", "render_ms", "commands")
    print(json.dumps({k: summary[k] for k in keys}), file=sys.stderr)
    # skip interpreter teardown (EGL/llvmpipe render threads): the summary is written
    exit_now(1 if summary["error"] else 0)
    return 1  # not reached


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `sim` subcommand."""
    p = sub.add_parser("sim", help="run the robot process: MuJoCo simulation of the embodiment")
    p.add_argument("--robot", default="gr1", help="robot name in robots/ or a TOML path")
    p.add_argument("--run-dir", default=None, help="run directory (default: per-user, per-robot)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run (0 = until signal)")
    p.add_argument("--window", action="store_true", help="open MuJoCo's viewer window (display)")
    from dualsys.commands.view import add_live_view_options

    add_live_view_options(p)
    p.add_argument("--driver", default=None, help="override the config's robot driver")
    p.add_argument("--no-rt", action="store_true", help="do not ask for SCHED_FIFO")
    p.set_defaults(func=cmd_sim)
