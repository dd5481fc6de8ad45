"""Instruction phrasings per behaviour, checked against the task pack's behaviours.

The files and their format belong to the robot's vocabulary (`dualsys.vocabulary`, which the
runtime reads too); this module adds what only the learning wing knows: the behaviours the
robot's task pack performs (`dualsys.tasks`), the split into training and held-out phrasings,
and the mix `dualsys eval` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dualsys.config import RobotConfig
from dualsys.tasks import task_pack
from dualsys.vocabulary import PhrasingsError, read_phrasings, robot_dir

__all__ = [
    "PhrasingsError",
    "eval_phrasings",
    "heldout_phrasings",
    "interleave",
    "load_phrasings",
    "robot_dir",
    "training_phrasings",
]


def load_phrasings(
    path: str | Path, behaviours: Sequence[str], require_all: bool = True
) -> dict[str, list[str]]:
    """behaviour -> phrasings from a TOML file; names not in `behaviours` (the task pack's)
    and empty lists are errors, and with `require_all` so is a behaviour missing."""
    return read_phrasings(path, known=behaviours, require_all=require_all)


def training_phrasings(cfg: RobotConfig) -> dict[str, list[str]]:
    """The training phrasings, checked to share no phrasing with the held-out file."""
    d, known = robot_dir(cfg), task_pack(cfg).behaviours
    train = load_phrasings(d / "phrasings_train.toml", known)
    held = d / "phrasings_heldout.toml"
    if held.is_file():
        seen = {t.lower() for ts in train.values() for t in ts}
        overlap = [
            t for ts in load_phrasings(held, known).values() for t in ts if t.lower() in seen
        ]
        if overlap:
            raise PhrasingsError(f"{held}: phrasings also used in training: {overlap}")
    return train


def heldout_phrasings(cfg: RobotConfig) -> dict[str, list[str]]:
    """The held-out phrasings (never trained on), or {} when the robot has none."""
    held = robot_dir(cfg) / "phrasings_heldout.toml"
    if not held.is_file():
        return {}
    return load_phrasings(held, task_pack(cfg).behaviours, require_all=False)


def interleave(*sets: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per behaviour, one list taking phrasings from each set in turn (a0, b0, a1, b1, ...;
    shorter lists repeat), so an evaluation cycling through it gives every set the same share
    of episodes. Behaviours missing from a set take phrasings from the others only."""
    out: dict[str, list[str]] = {}
    for name in dict.fromkeys(b for s in sets for b in s):
        lists = [s[name] for s in sets if s.get(name)]
        n = max(len(x) for x in lists)
        out[name] = [x[i % len(x)] for i in range(n) for x in lists]
    return out


def eval_phrasings(cfg: RobotConfig, files: str | None) -> dict[str, list[str]]:
    """What `dualsys eval` runs: the given TOML files (comma-separated) interleaved, or by
    default the training phrasings interleaved with the held-out ones (half of the episodes
    of every behaviour use wordings the model never saw)."""
    if files:
        known = task_pack(cfg).behaviours
        names = [f.strip() for f in files.split(",") if f.strip()]
        sets = [load_phrasings(f, known, require_all=False) for f in names]
        return interleave(*sets)
    return interleave(training_phrasings(cfg), heldout_phrasings(cfg))
