"""`dualsys demo --robot gr1 --episodes N --out DIR`: record expert demonstrations."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dualsys import config


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate N expert episodes in the offline simulation into a dataset directory."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from dualsys.behaviours.generate import generate, jobs
    from dualsys.behaviours.phrasings import PhrasingsError, training_phrasings
    from dualsys.tasks import task_pack

    cfg = config.load_robot(args.robot)
    known = task_pack(cfg).behaviours
    out = Path(args.out)
    if (out / "meta" / "info.json").exists() and not args.overwrite:
        print(f"dualsys demo: error: {out} already holds a dataset (--overwrite)", file=sys.stderr)
        return 2
    behaviours = tuple(args.behaviours.split(",")) if args.behaviours else known
    bad = [b for b in behaviours if b not in known]
    if bad:
        print(f"dualsys demo: error: unknown behaviours {bad}; known: {known}", file=sys.stderr)
        return 2
    try:
        phrasings = training_phrasings(cfg)
    except PhrasingsError as exc:
        print(f"dualsys demo: error: {exc}", file=sys.stderr)
        return 2
    for flag, share in (("--moving-starts", args.moving_starts), ("--own-starts", args.own_starts)):
        if not 0.0 <= share <= 1.0:  # NaN fails too
            msg = f"dualsys demo: error: {flag} {share}: expected a share in [0, 1]"
            print(msg, file=sys.stderr)
            return 2
    job_list = jobs(
        args.episodes, phrasings, args.seed, args.seconds, behaviours, args.moving_starts,
        args.own_starts,
    )  # fmt: skip
    t0 = time.monotonic()
    cols = (*Progress.get_default_columns()[:2], MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols[:1], BarColumn(), *cols[2:]) as bar:
        task = bar.add_task("episodes", total=len(job_list))
        writer = generate(cfg, out, job_list, args.workers, lambda i: bar.advance(task))
    print(
        f"dualsys demo: {len(writer.episodes)} episodes, {writer.frames} steps, "
        f"{len(writer.tasks)} phrasings -> {out} in {time.monotonic() - t0:.0f} s"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `demo` subcommand."""
    p = sub.add_parser("demo", help="record scripted expert demonstrations (offline simulation)")
    p.add_argument("--robot", default="gr1", help="robot name or TOML path (default gr1)")
    p.add_argument("--episodes", type=int, default=90, help="number of episodes (all behaviours)")
    p.add_argument("--out", required=True, help="dataset directory to create")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=4.0, help="episode length (s)")
    p.add_argument("--workers", type=int, default=1, help="simulation worker processes")
    p.add_argument("--behaviours", default="", help="comma-separated subset (default: all)")
    p.add_argument(
        "--moving-starts",
        type=float,
        default=0.0,
        help="share of episodes that start in motion: another behaviour runs 0.6-3 s "
        "(unrecorded), then the episode's behaviour takes over from there (default 0)",
    )
    p.add_argument(
        "--own-starts",
        type=float,
        default=0.0,
        help="share of episodes that start still near the behaviour's own goal (a touch a few "
        "cm off its object, a wave's hand still on its swing) (default 0)",
    )
    p.add_argument("--overwrite", action="store_true", help="write over an existing dataset")
    p.set_defaults(func=cmd_demo)
