"""`dualsys train --robot gr1 --data DIR --out CKPT_DIR`: train System 2's fusion head and
System 1's policy together on demonstrations (resumes from CKPT_DIR when it holds a run)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dualsys import config


def cmd_train(args: argparse.Namespace) -> int:
    """Cache encoder features, then train by flow matching with a progress bar."""
    import torch
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from dualsys.behaviours.dataset import DatasetError
    from dualsys.behaviours.features import (
        FeatureSet,
        build_cache,
        build_object_cache,
        build_pixel_cache,
    )
    from dualsys.behaviours.train import TrainConfig, Trainer
    from dualsys.system2.fusion import DEFAULT_PIXELS

    cfg = config.load_robot(args.robot)
    t0 = time.monotonic()
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    try:
        with Progress(*cols) as bar:
            paths = []
            for data in args.data.split(","):
                task = bar.add_task(f"features {Path(data).name}", total=None)
                paths.append(
                    build_cache(cfg, data, lambda i, n, t=task: bar.update(t, completed=i, total=n))
                )
                if args.spatial_k > 0:
                    task = bar.add_task(f"pixels {Path(data).name}", total=None)
                    build_pixel_cache(
                        data, DEFAULT_PIXELS,
                        lambda i, n, t=task: bar.update(t, completed=i, total=n),
                    )  # fmt: skip
                if args.aux_objects > 0:
                    task = bar.add_task(f"objects {Path(data).name}", total=None)
                    build_object_cache(
                        data, lambda i, n, t=task: bar.update(t, completed=i, total=n)
                    )
    except DatasetError as exc:
        print(f"dualsys train: error: {exc}", file=sys.stderr)
        return 2
    t_cache = time.monotonic() - t0
    tc = TrainConfig(
        steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, width=args.width,
        layers=args.layers, threads=args.threads, save_every=args.save_every,
        max_minutes=args.max_minutes, ema=args.ema, spatial_k=args.spatial_k,
        latent_tokens=args.latent_tokens, text_mix=args.text_mix,
        text_noise=args.text_noise, text_swap=args.text_swap, oversample=args.oversample,
        oversample_factor=args.oversample_factor, aux_objects=args.aux_objects,
        prefix_max=args.prefix_max, prefix_offset=args.prefix_offset,
        text_side=args.text_side, aux_behaviour=args.aux_behaviour,
    )  # fmt: skip
    try:
        fs = FeatureSet.merged(paths)
        if args.text_swap > 0 or args.text_side:
            from dualsys.system2.text import TextEncoder

            enc = TextEncoder("cpu")
        if args.text_swap > 0:
            added = _add_training_phrasings(cfg, fs, enc)
            print(f"dualsys train: {added} training phrasings without demonstrations added")
        if args.text_side:
            fs.add_side_features(enc.side)
        trainer = Trainer(cfg, fs, Path(args.out), tc)
        left_out = int((~fs.current_episodes()).sum())
        if left_out:
            print(
                f"dualsys train: leaving out {left_out} episodes demonstrated with an older "
                "version of the expert (dualsys.behaviours.expert.EXPERT_VERSION)"
            )
    except ValueError as exc:
        print(f"dualsys train: error: {exc}", file=sys.stderr)
        return 2
    if trainer.step:
        print(f"dualsys train: resuming {args.out} at step {trainer.step}")
    with Progress(*cols, TextColumn("loss {task.fields[loss]:.4f}")) as bar:
        task = bar.add_task("train", total=tc.steps, completed=trainer.step, loss=float("nan"))

        def progress(step: int, loss: float) -> None:
            if step % 10 == 0:
                bar.update(task, completed=step, total=trainer.tc.steps, loss=loss)

        trainer.run(progress)
    trainer.save()
    tail = [v for _, v in trainer.losses[-100:]]
    summary = {
        "data": str(args.data),
        "samples": len(trainer.fs),
        "episodes": int(trainer.fs.ep_len.numel()),
        "episodes_left_out": left_out,
        "phrasings": len(trainer.fs.texts),
        "steps": trainer.step,
        "batch": tc.batch,
        "seed": tc.seed,
        "feature_cache_s": round(t_cache, 1),
        "train_wall_s": round(trainer.wall_s, 1),
        "final_loss_mean100": sum(tail) / max(1, len(tail)),
        "aux_objects": tc.aux_objects,
        "policy_spec": trainer.spec.__dict__,
    }
    rows = torch.arange(0, len(trainer.fs), 97)
    if trainer.aux is not None:
        summary["object_error_m_train_rows"] = round(trainer.object_error_m(rows), 4)
    if trainer.beh_head is not None:
        summary["aux_behaviour"] = tc.aux_behaviour
        summary["behaviour_accuracy_train_rows"] = round(trainer.behaviour_accuracy(rows), 4)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def _add_training_phrasings(cfg: config.RobotConfig, fs, enc) -> int:
    """Every phrasing of robots/<robot>/phrasings_train.toml joins the training texts, also
    those no demonstration was recorded with (checked against the held-out file); `enc` is
    the frozen `TextEncoder`. Returns how many phrasings were added."""
    from dualsys.behaviours.phrasings import robot_dir, training_phrasings

    if not (robot_dir(cfg) / "phrasings_train.toml").is_file():
        return 0
    return fs.add_phrasings(training_phrasings(cfg), lambda t: enc.embed(t)[0])


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    p = sub.add_parser("train", help="train the fusion head + flow-matching policy on demos")
    p.add_argument("--robot", default="gr1", help="robot name or TOML path (default gr1)")
    p.add_argument(
        "--data", required=True, help="dataset directory (from dualsys demo); several: a,b"
    )
    p.add_argument("--out", required=True, help="checkpoint directory (resumed when present)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=0, help="policy width (0 = robot config)")
    p.add_argument("--layers", type=int, default=0, help="policy layers (0 = robot config)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (at most 2 here)")
    p.add_argument("--save-every", type=int, default=500)
    tuned = (
        ("--max-minutes", float, 0.0, "wall-time budget: fewer steps if --steps would not fit "
         "(0 = off)"),
        ("--ema", float, 0.999, "decay of the saved weight average (0 = save the raw weights)"),
        ("--spatial-k", int, 16, "keypoints of the fusion head's spatial image pathway "
         "(0 = none)"),
        ("--text-mix", float, 0.5, "probability of blending two phrasings of one behaviour"),
        ("--text-noise", float, 0.3, "norm of the noise added to instruction embeddings"),
        ("--text-swap", float, 0.5, "probability of training an episode with another phrasing "
         "of its behaviour (all of robots/<robot>/phrasings_train.toml)"),
        ("--oversample", str, "", "comma-separated behaviours to draw more often (fine-tuning)"),
        ("--oversample-factor", float, 1.0, "how many times as often --oversample behaviours "
         "are drawn"),
        ("--prefix-max", int, 8, "policy: train with up to this many given (frozen) actions "
         "of the chunk, as real-time chunking uses them (0 = off: inpainting)"),
        ("--prefix-offset", float, 0.15, "policy: largest std (normalised units) of a constant "
         "offset added to the given actions, so the policy corrects a prefix that lies off the "
         "demonstration instead of continuing it (0 = off)"),
        ("--aux-objects", float, 0.5, "weight of the auxiliary loss that teaches the spatial "
         "pathway the objects' positions (0 = off)"),
        ("--aux-behaviour", float, 0.1, "weight of the auxiliary loss that reads the "
         "instructed behaviour back from the latent, so the instruction, not the pose, "
         "decides it (0 = off)"),
    )  # fmt: skip
    for flag, kind, default, text in tuned:
        p.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument("--no-text-side", dest="text_side", action="store_false",
                   help="fusion head: leave out the left/right side feature of the instruction "
                   "(dualsys.system2.text.embed_sided)")  # fmt: skip
    p.add_argument("--latent-tokens", action="store_true",
                   help="policy: add the latent to every action token too (default: prefix "
                   "token only)")  # fmt: skip
    p.set_defaults(func=cmd_train)
