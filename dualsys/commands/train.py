"""`dualsys train --robot gr1 --data-root DATA --out CKPT`: train System 2's fusion head and
System 1's policy together on demonstrations, by the robot's training recipe
(robots/<robot>/train.toml, `dualsys.behaviours.recipe`).

Every knob of `TrainConfig` is a flag, generated from the dataclass (name, type, help); a flag
given sets that knob in every stage of the recipe. The stages run in order in CKPT, each
resuming the one before (a stopped run continues where it stopped); with several stages each
one's weights are kept in CKPT/stages/<name>/. CKPT/recipe.toml records the recipe as run
(flags applied, datasets as paths): `--recipe CKPT/recipe.toml` runs it again.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path

from dualsys import config
from dualsys.behaviours.recipe import (
    KNOBS,
    Recipe,
    Stage,
    check_knob,
    default_recipe,
    dump,
    load_recipe,
    recipe_path,
)


def cmd_train(args: argparse.Namespace) -> int:
    """Load the recipe, apply the flags, cache encoder features, train every stage."""
    from dualsys.behaviours.dataset import DatasetError

    cfg = config.load_robot(args.robot)
    recipe = recipe_for(cfg.path, args)
    out = Path(args.out)
    try:
        _build_caches(cfg, recipe)
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.toml").write_text(dump(recipe))
        end = 0  # the end step of the stage before
        for stage in recipe.stages:
            summary = _train_stage(cfg, stage, out, end)
            end = stage.train.steps
            if summary and len(recipe.stages) > 1:
                _keep_stage(out, stage.name)
    except config.ConfigError:  # the CLI's handler reports it
        raise
    except (DatasetError, ValueError) as exc:
        print(f"dualsys train: error: {exc}", file=sys.stderr)
        return 2
    return 0


def recipe_for(robot_toml: Path, args: argparse.Namespace) -> Recipe:
    """The recipe of --recipe or the robot's (TrainConfig's defaults without one), with the
    knob flags given and the datasets resolved to paths."""
    path = args.recipe or recipe_path(robot_toml)
    own = args.recipe is not None or path.is_file()
    recipe = load_recipe(path) if own else default_recipe()
    knobs = {
        name: check_knob("command line", _flag(name), name, getattr(args, name))
        for name in KNOBS
        if hasattr(args, name)  # a knob flag not given is absent (SUPPRESS)
    }
    recipe = recipe.with_knobs(knobs)
    if args.data:
        recipe = recipe.with_data(tuple(d for d in args.data.split(",") if d))
    root = Path(args.data_root) if args.data_root else None
    stages = []
    for s in recipe.stages:
        if not s.data:
            raise config.ConfigError(
                "command line", "--data", f"stage {s.name} names no datasets: give --data DIR"
            )
        relative = [d for d in s.data if not Path(d).is_absolute()]
        if relative and root is None and not args.data:
            raise config.ConfigError(
                "command line", "--data-root",
                f"{recipe.path} names datasets ({', '.join(relative)}): give --data-root DIR "
                "that holds them, or --data DIR[,DIR] to train every stage on other data",
            )  # fmt: skip
        base = root if root is not None and not args.data else Path.cwd()
        data = tuple(os.path.abspath(base / d) for d in s.data)
        stages.append(dataclasses.replace(s, data=data))
    return dataclasses.replace(recipe, stages=tuple(stages))


def _build_caches(cfg: config.RobotConfig, recipe: Recipe) -> None:
    """Encoder features (and pixels, object positions where a stage needs them) of every
    dataset of the recipe, with progress bars; up-to-date caches are reused."""
    from rich.progress import Progress

    from dualsys.behaviours.features import build_cache, build_object_cache, build_pixel_cache
    from dualsys.system2.fusion import DEFAULT_PIXELS

    pixels = any(s.train.spatial_k > 0 for s in recipe.stages)
    objects = any(s.train.aux_objects > 0 for s in recipe.stages)
    datasets = dict.fromkeys(d for s in recipe.stages for d in s.data)
    with Progress(*_columns()) as bar:

        def step(what: str, data: str):
            task = bar.add_task(f"{what} {Path(data).name}", total=None)
            return lambda i, n: bar.update(task, completed=i, total=n)

        for data in datasets:
            build_cache(cfg, data, step("features", data))
            if pixels:
                build_pixel_cache(data, DEFAULT_PIXELS, step("pixels", data))
            if objects:
                build_object_cache(data, step("objects", data))


def _train_stage(cfg: config.RobotConfig, stage: Stage, out: Path, begin: int) -> dict | None:
    """Train one stage in `out` (resuming what is there) and write summary.json; None when
    `out` is already at or past the stage's end step. begin: the end step of the stage
    before; a `restart` stage found there begins a fine-tune from its averaged weights."""
    import torch
    from rich.progress import Progress, TextColumn

    from dualsys.behaviours.features import FeatureSet
    from dualsys.behaviours.train import Trainer, restart_from_average
    from dualsys.tasks import task_pack

    tc = dataclasses.replace(stage.train)  # the trainer may lower `steps` (max_minutes)
    state = out / "train_state.json"
    done = json.loads(state.read_text())["step"] if state.is_file() else 0
    if done >= tc.steps:
        print(f"dualsys train: stage {stage.name}: {out} is at step {done}, its end is {tc.steps}")
        return None
    if tc.restart and done and done == begin:
        restart_from_average(out, tc.seed)
        print(f"dualsys train: stage {stage.name}: fine-tunes the averaged weights of step {done}")
    t0 = time.monotonic()
    fs = FeatureSet.merged([Path(d) / "features.npz" for d in stage.data])
    enc = _text_encoder() if tc.text_swap > 0 or tc.text_side else None
    if tc.text_swap > 0:
        added = _add_training_phrasings(cfg, fs, enc)
        print(f"dualsys train: {added} training phrasings without demonstrations added")
    if tc.text_side:
        fs.add_side_features(enc.side)
    trainer = Trainer(cfg, fs, out, tc)
    left_out = int((~fs.current_episodes(task_pack(cfg).expert_version)).sum())
    if left_out:
        print(
            f"dualsys train: leaving out {left_out} episodes demonstrated with an older "
            "version of the expert (its task pack's expert_version)"
        )
    if trainer.step:
        print(f"dualsys train: stage {stage.name}: resuming {out} at step {trainer.step}")
    t_setup = time.monotonic() - t0
    cols = (*_columns(), TextColumn("loss {task.fields[loss]:.4f}"))
    with Progress(*cols) as bar:
        task = bar.add_task(
            f"train {stage.name}", total=tc.steps, completed=trainer.step, loss=float("nan")
        )

        def progress(step: int, loss: float) -> None:
            if step % 10 == 0:
                bar.update(task, completed=step, total=trainer.tc.steps, loss=loss)

        trainer.run(progress)
        bar.update(task, completed=trainer.step, total=trainer.tc.steps, loss=trainer.losses[-1][1])
    trainer.save()
    tail = [v for _, v in trainer.losses[-100:]]
    summary = {
        "stage": stage.name,
        "data": list(stage.data),
        "samples": len(trainer.fs),
        "episodes": int(trainer.fs.ep_len.numel()),
        "episodes_left_out": left_out,
        "phrasings": len(trainer.fs.texts),
        "steps": trainer.step,
        "batch": tc.batch,
        "seed": tc.seed,
        "setup_s": round(t_setup, 1),
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
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


@functools.cache
def _text_encoder():
    """The frozen instruction encoder, loaded once for every stage; its cache holds every
    training phrasing and its mirror, so later stages embed nothing again."""
    from dualsys.system2.text import TextEncoder

    return TextEncoder("cpu", cache_size=4096)


def _keep_stage(out: Path, name: str) -> None:
    """Copy the stage's weights and records (every file in `out` but the resumable training
    state) to out/stages/<name>/."""
    keep = out / "stages" / name
    keep.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        if f.is_file() and not f.name.startswith("train_state."):
            shutil.copy2(f, keep / f.name)


def _columns() -> tuple:
    """Progress bar columns: description, bar, count, elapsed, remaining."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip


def _add_training_phrasings(cfg: config.RobotConfig, fs, enc) -> int:
    """Every phrasing of robots/<robot>/phrasings_train.toml joins the training texts, also
    those no demonstration was recorded with (checked against the held-out file); `enc` is
    the frozen `TextEncoder`. Returns how many phrasings were added."""
    from dualsys.behaviours.phrasings import robot_dir, training_phrasings

    if not (robot_dir(cfg) / "phrasings_train.toml").is_file():
        return 0
    return fs.add_phrasings(training_phrasings(cfg), lambda t: enc.embed(t)[0])


def _flag(name: str) -> str:
    """The command-line flag of a knob: --save-every for save_every."""
    return "--" + name.replace("_", "-")


def _shown(recipe: Recipe, name: str) -> str:
    """A knob's value in the recipe; per run of stages where the stages differ."""
    runs: list[list] = []  # [first stage, last stage, value] of consecutive equal values
    for s in recipe.stages:
        value = json.dumps(getattr(s.train, name))
        if runs and runs[-1][2] == value:
            runs[-1][1] = s.name
        else:
            runs.append([s.name, s.name, value])
    if len(runs) == 1:
        return runs[0][2]
    return "; ".join(f"{a}{'' if a == b else '-' + b} {v}" for a, b, v in runs)


def _add_knobs(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field: type and help from the dataclass, the value the
    default robot's recipe gives it in the help (the recipe is read when training)."""
    try:
        robot_toml = config.resolve("gr1")
        shown = load_recipe(recipe_path(robot_toml)), "gr1 recipe"
    except config.ConfigError:  # no gr1 recipe here: TrainConfig's defaults
        shown = default_recipe(), "default"
    g = p.add_argument_group(
        "knobs", "set in every stage of the recipe; without a flag, the recipe's value"
    )
    for name, (kind, f) in KNOBS.items():
        text = f"{f.metadata['help']} [{shown[1]}: {_shown(shown[0], name)}]"
        text = text.replace("%", "%%")
        if kind is bool:
            g.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=text)  # fmt: skip
        else:
            metavar = {int: "N", float: "X", str: "A,B"}[kind]
            g.add_argument(_flag(name), dest=name, type=kind, default=argparse.SUPPRESS,
                           metavar=metavar, help=text)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    p = sub.add_parser(
        "train",
        help="train the fusion head + flow-matching policy on demos, by the robot's recipe",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--robot", default="gr1", help="robot name or TOML path (default gr1)")
    p.add_argument("--recipe", type=Path, default=None,
                   help="training recipe TOML (default robots/<robot>/train.toml; without one, "
                   "TrainConfig's defaults)")  # fmt: skip
    p.add_argument("--data-root", help="directory holding the datasets the recipe names")
    p.add_argument("--data", help="dataset directories (from dualsys demo), a,b: every stage "
                   "trains on these instead of the recipe's")  # fmt: skip
    p.add_argument("--out", required=True, help="checkpoint directory (resumed when present)")
    _add_knobs(p)
    p.set_defaults(func=cmd_train)
