"""`dualsys export --format lerobot DATA_DIR OUT_DIR`: a demonstration dataset (from
`dualsys demo`) as a LeRobotDataset v3 that LeRobot, GR00T and pi0 fine-tuning read."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dualsys import config


def cmd_export(args: argparse.Namespace) -> int:
    """Write the export; 2 on bad input (names what), 0 when written."""
    from dualsys.export import INSTALL_HINT, have_av

    if args.format != "lerobot":
        print(f"dualsys export: error: unknown format {args.format!r} (known: lerobot)")
        return 2
    if not have_av():
        print(f"dualsys export: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from dualsys.behaviours.dataset import DatasetError, DatasetReader
    from dualsys.export.lerobot_write import export_lerobot

    try:
        reader = DatasetReader(args.data)
        cfg = config.load_robot(args.robot or reader.info.get("robot_type") or "gr1")

        def progress(i: int, n: int) -> None:
            print(f"\rdualsys export: episode {i}/{n}", end="", file=sys.stderr, flush=True)

        info = export_lerobot(cfg, Path(args.data), Path(args.out), progress)
    except (DatasetError, FileExistsError, OSError, KeyError, ValueError) as exc:
        print(f"\ndualsys export: error: {exc}", file=sys.stderr)
        return 2
    codecs = [f["info"]["video.codec"] for f in info["features"].values() if f["dtype"] == "video"]
    print(
        f"\ndualsys export: {info['total_episodes']} episodes, {info['total_frames']} frames at "
        f"{info['fps']} fps, {info['total_tasks']} tasks -> {args.out} (LeRobotDataset "
        f"{info['codebase_version']}, video {', '.join(codecs)})",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `export`."""
    p = sub.add_parser("export", help="write a demonstration dataset as a LeRobotDataset v3")
    p.add_argument("data", help="dataset directory written by dualsys demo")
    p.add_argument("out", help="new directory for the LeRobotDataset")
    p.add_argument("--format", default="lerobot", help="output format (lerobot)")
    p.add_argument("--robot", default=None, help="robot config (default: the dataset's)")
    p.set_defaults(func=cmd_export)
