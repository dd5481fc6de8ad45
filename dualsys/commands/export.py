"""`dualsys export --format lerobot SOURCE OUT_DIR`: a demonstration dataset (from
`dualsys demo`) or a recorded run (`dualsys up --record`, `dualsys eval --record`: one MCAP
file, cut into episodes where the instruction changes) as a LeRobotDataset v3 that LeRobot,
GR00T and pi0 fine-tuning read."""

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
    from dualsys.export.recording import RecordingSource

    try:
        if Path(args.data).is_file():  # a recorded run
            rec_robot = args.robot and config.load_robot(args.robot)
            reader = RecordingSource(args.data, rec_robot or None, args.fps, args.min_seconds)
            print(
                f"dualsys export: {args.data}: {len(reader)} episodes cut from the recording "
                f"at {reader.fps} fps ({reader.dropped} invalid messages left out)",
                file=sys.stderr,
            )
        elif args.fps is not None:
            print("dualsys export: error: --fps applies to a recording (MCAP file)")
            return 2
        else:
            reader = DatasetReader(args.data)
        cfg = config.load_robot(args.robot or reader.info.get("robot_type") or "gr1")

        def progress(i: int, n: int) -> None:
            print(f"\rdualsys export: episode {i}/{n}", end="", file=sys.stderr, flush=True)

        info = export_lerobot(cfg, reader, Path(args.out), progress)
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
    p = sub.add_parser(
        "export", help="write demonstrations or a recorded run as a LeRobotDataset v3"
    )
    p.add_argument(
        "data",
        help="dataset directory written by dualsys demo, or an MCAP file written by "
        "dualsys up/eval --record",
    )
    p.add_argument("out", help="new directory for the LeRobotDataset")
    p.add_argument("--format", default="lerobot", help="output format (lerobot)")
    p.add_argument("--robot", default=None, help="robot config (default: the dataset's)")
    p.add_argument(
        "--fps",
        type=int,
        default=None,
        help="rows per second for a recording (default: the config's action rate)",
    )
    p.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="a recording's pieces shorter than this are left out (default 1.0)",
    )
    p.set_defaults(func=cmd_export)
