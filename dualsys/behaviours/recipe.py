"""Training recipes: `TrainConfig` (every knob of `dualsys train`: type, range, help) and the
per-robot recipe file that sets them, `robots/<robot>/train.toml`.

A recipe is a `[train]` table of knobs and a list of `[[stage]]` tables. Each stage is one
training run: a `name`, the datasets it trains on (`data`, names under the data root or
paths) and any knob it sets differently from `[train]`. Stages run in order in one checkpoint
directory, each resuming the one before and training on to its own end step (`steps`), so a
recipe records a resume chain as it ran. A recipe without stages is one stage, `train`,
without data. Knobs a recipe leaves out take `TrainConfig`'s defaults, the plain
configuration with every extra off.

Loading checks every value (type, range, finite numbers) and names file, key and reason on
any error (`ConfigError`); unknown keys are errors. `dump` writes a recipe back as TOML,
every knob of every stage spelt out.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import operator
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualsys.config import MAX_LAYERS, MAX_THREADS, MAX_WIDTH, ConfigError

#: The recipe file of a robot, beside its config: robots/<robot>/train.toml.
RECIPE_NAME = "train.toml"
#: Stage names become directory names (OUT/stages/<name>).
_STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _knob(default: Any, help: str, **bounds: float) -> Any:
    """A TrainConfig field: its help text and bounds (lo/hi inclusive, gt/lt exclusive)."""
    return field(default=default, metadata={"help": help, **bounds})


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (stored in train_state.json). The defaults are the
    plain configuration; a robot's shipped values are its recipe (robots/<robot>/train.toml).
    Not frozen: `Trainer` lowers `steps` to fit `max_minutes`."""

    steps: int = _knob(6000, "end step: train (on) to this many optimiser steps", lo=1)
    batch: int = _knob(128, "samples per optimiser step", lo=1, hi=1 << 20)
    lr: float = _knob(3e-4, "peak learning rate (AdamW; warm-up, then cosine to 10%)", gt=0, hi=1)
    weight_decay: float = _knob(1e-4, "AdamW weight decay", lo=0, hi=1)
    warmup: int = _knob(200, "steps of linear learning-rate warm-up", lo=0)
    seed: int = _knob(0, "seed of initialisation and sampling", lo=0, hi=2**31 - 1)
    state_noise: float = _knob(
        0.01, "std (rad) of the noise added to the policy's joint positions", lo=0, hi=1
    )
    fusion_state_noise: float = _knob(
        0.0,
        "std (rad) of the noise added to the joint positions System 2's fusion head sees, so "
        "the latent cannot carry the hand's exact pose into the policy's hold (0 = off)",
        lo=0,
        hi=1,
    )
    save_every: int = _knob(500, "checkpoint every this many steps", lo=1)
    width: int = _knob(0, "policy width (0 = the robot config's)", lo=0, hi=MAX_WIDTH)
    layers: int = _knob(0, "policy layers (0 = the robot config's)", lo=0, hi=MAX_LAYERS)
    threads: int = _knob(2, "torch threads", lo=1, hi=MAX_THREADS)
    max_minutes: float = _knob(
        0.0, "wall-time budget: fewer steps if `steps` would not fit (0 = off)", lo=0
    )
    ema: float = _knob(
        0.999, "decay of the saved weight average (0 = save the raw weights)", lo=0, lt=1
    )
    spatial_k: int = _knob(
        16, "keypoints of the fusion head's spatial image pathway (0 = none)", lo=0, hi=1024
    )
    latent_tokens: bool = _knob(
        False, "policy: add the latent to every action token too (off: prefix token only)"
    )
    text_swap: float = _knob(
        0.0,
        "probability of training an episode with another phrasing "
        "of its behaviour (all of robots/<robot>/phrasings_train.toml)",
        lo=0,
        hi=1,
    )
    text_mix: float = _knob(
        0.5, "probability of blending two phrasings of one behaviour", lo=0, hi=1
    )
    text_noise: float = _knob(
        0.3, "expected norm of the noise added to instruction embeddings", lo=0, hi=10
    )
    oversample: str = _knob("", "comma-separated behaviours whose samples are drawn more often")
    oversample_factor: float = _knob(
        1.0, "how many times as often `oversample` behaviours are drawn", gt=0, hi=1000
    )
    prefix_max: int = _knob(
        0,
        "policy: train with up to this many given (frozen) actions of "
        "the chunk, as real-time chunking uses them (0 = off)",
        lo=0,
        hi=1024,
    )
    prefix_offset: float = _knob(
        0.0,
        "policy: largest std (normalised units) of a constant "
        "offset added to the given actions, so the policy brings a "
        "prefix that lies off the demonstration back (0 = off)",
        lo=0,
        hi=10,
    )
    noise_scale: float = _knob(
        1.0,
        "scale of the noise each sampled chunk starts from, written into the checkpoint as the "
        "setting it runs with (1 = the trained distribution, 0 = the noise's mean)",
        lo=0,
        hi=10,
    )
    aux_objects: float = _knob(
        0.0,
        "weight of the auxiliary loss that teaches the spatial "
        "pathway the objects' positions (0 = off; needs spatial_k > 0)",
        lo=0,
        hi=1000,
    )
    text_side: bool = _knob(
        False,
        "fusion head: read the left/right side feature of the "
        "instruction (dualsys.system2.text.TextEncoder.embed_sided)",
    )
    aux_behaviour: float = _knob(
        0.0,
        "weight of the auxiliary loss that reads the instructed "
        "behaviour back from the latent (0 = off)",
        lo=0,
        hi=1000,
    )
    restart: bool = _knob(
        False,
        "a stage that begins from the stage before's saved (averaged) weights with a fresh "
        "optimiser, average and random generator, as a fine-tune (off: it resumes the raw "
        "weights and the optimiser)",
    )


#: name -> (python type, dataclass field) of every knob, in declaration order.
KNOBS: dict[str, tuple[type, dataclasses.Field]] = {
    f.name: (typing.get_type_hints(TrainConfig)[f.name], f) for f in dataclasses.fields(TrainConfig)
}


def check_knob(where: str | Path, key: str, name: str, value: Any) -> Any:
    """`value` for knob `name`, type- and range-checked; ConfigError(where, key, reason)."""
    kind, f = KNOBS[name]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, key, f"expected true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(where, key, f"expected a string, got {value!r}")
        return value
    label = "an integer" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ConfigError(where, key, f"expected {label}, got {type(value).__name__} {value!r}")
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(where, key, f"expected a finite number, got {value}")
    m = f.metadata
    for bound, bad, text in (("lo", operator.lt, ">="), ("gt", operator.le, ">"),
                             ("hi", operator.gt, "<="), ("lt", operator.ge, "<")):  # fmt: skip
        if bound in m and bad(value, m[bound]):
            raise ConfigError(where, key, f"expected {label} {text} {m[bound]}, got {value}")
    return value


@dataclass(frozen=True)
class Stage:
    """One training run of a recipe: its name, datasets (names under the data root, or
    paths) and knobs."""

    name: str
    data: tuple[str, ...]
    train: TrainConfig


@dataclass(frozen=True)
class Recipe:
    """A training recipe: stages run in order in one checkpoint directory (module docstring).
    `path` is the file it came from (None: TrainConfig's defaults, no file)."""

    stages: tuple[Stage, ...]
    path: Path | None = None

    def with_knobs(self, knobs: dict[str, Any]) -> Recipe:
        """The recipe with `knobs` (already checked) set in every stage. A recipe of several
        stages keeps each stage's end step: `steps` is refused there."""
        if "steps" in knobs and len(self.stages) > 1:
            raise ConfigError(
                "command line", "--steps",
                f"{self.path} has {len(self.stages)} stages, each with its own end step; "
                "change them in a copy of the recipe (--recipe)",
            )  # fmt: skip
        stages = tuple(
            dataclasses.replace(s, train=dataclasses.replace(s.train, **knobs)) for s in self.stages
        )
        return dataclasses.replace(self, stages=stages)

    def with_data(self, data: tuple[str, ...]) -> Recipe:
        """The recipe with every stage training on `data`."""
        stages = tuple(dataclasses.replace(s, data=data) for s in self.stages)
        return dataclasses.replace(self, stages=stages)


def default_recipe() -> Recipe:
    """One stage of TrainConfig's defaults, without data (a robot that has no recipe)."""
    return Recipe((Stage("train", (), TrainConfig()),))


def recipe_path(robot_toml: Path) -> Path:
    """robots/<robot>/train.toml beside robots/<robot>.toml."""
    return robot_toml.with_suffix("") / RECIPE_NAME


def load_recipe(path: str | Path) -> Recipe:
    """Load and check a recipe file; ConfigError naming file, key and reason."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError(
            path, "<file>", f"cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "<toml>", f"not valid TOML: {exc}") from None
    _no_unknown(path, "", doc, ("train", "stage"))
    base = doc.get("train", {})
    if not isinstance(base, dict):
        raise ConfigError(path, "train", "expected a table of knobs")
    _no_unknown(path, "train.", base, KNOBS)
    base = {k: check_knob(path, f"train.{k}", k, v) for k, v in base.items()}
    raw = doc.get("stage", [{"name": "train", "data": []}])
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "stage", "expected one or more [[stage]] tables")
    stages: list[Stage] = []
    for i, st in enumerate(raw):
        stages.append(_stage(path, f"stage[{i}]", st, base))
        end = stages[-1].train.steps
        if len(stages) > 1 and end <= stages[-2].train.steps:
            raise ConfigError(
                path, f"stage[{i}].steps",
                f"a stage trains on from the one before: expected an end step > "
                f"{stages[-2].train.steps}, got {end}",
            )  # fmt: skip
    names = [s.name for s in stages]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(path, f"stage[{i}].name", f"{name!r} names an earlier stage too")
    return Recipe(tuple(stages), path)


def _stage(path: Path, key: str, st: Any, base: dict[str, Any]) -> Stage:
    """One [[stage]] table: name, data, and the knobs it sets over [train]."""
    if not isinstance(st, dict):
        raise ConfigError(path, key, "expected a table")
    _no_unknown(path, f"{key}.", st, ("name", "data", *KNOBS))
    name = st.get("name")
    if not isinstance(name, str) or not _STAGE_NAME.fullmatch(name):
        raise ConfigError(
            path, f"{key}.name",
            f"expected a name of letters, digits, '_', '.', '-' (a directory name), got {name!r}",
        )  # fmt: skip
    data = st.get("data", [])
    ok = isinstance(data, list) and all(isinstance(d, str) and d and "\0" not in d for d in data)
    if not ok:
        raise ConfigError(
            path, f"{key}.data", f"expected a list of dataset names or paths, got {data!r}"
        )
    knobs = {k: check_knob(path, f"{key}.{k}", k, v) for k, v in st.items() if k in KNOBS}
    return Stage(name, tuple(data), TrainConfig(**{**base, **knobs}))


def _no_unknown(path: Path, prefix: str, table: dict, known: Any) -> None:
    """ConfigError for the first key of `table` that is not in `known` (with a close match)."""
    for key in table:
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(path, f"{prefix}{key}", f"unknown key{hint}")


def dump(recipe: Recipe) -> str:
    """The recipe as TOML that `load_recipe` reads back to an equal recipe: every stage with
    its name, data and every knob."""
    out = []
    for s in recipe.stages:
        out += ["[[stage]]", f"name = {_toml(s.name)}", f"data = {_toml(list(s.data))}"]
        out += [f"{k} = {_toml(v)}" for k, v in dataclasses.asdict(s.train).items()]
        out.append("")
    return "\n".join(out)


def _toml(value: Any) -> str:
    """A TOML literal of a bool, int, finite float, string or list of strings (JSON's
    string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)
