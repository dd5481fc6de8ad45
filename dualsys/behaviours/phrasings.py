"""Instruction phrasings per behaviour, checked against the scripted expert's behaviours.

The files and their format belong to the robot's vocabulary (`dualsys.vocabulary`, which the
runtime reads too); this module adds what only the learning wing knows: the behaviours the
expert performs (`BEHAVIOURS`), the split into training and held-out phrasings, and the mix
`dualsys eval` runs.
"""

from __future__ import annotations

from pathlib import Path

from dualsys.behaviours.expert import BEHAVIOURS
from dualsys.config import RobotConfig
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


def load_phrasings(path: str | Path, require_all: bool = True) -> dict[str, list[str]]:
    """behaviour -> phrasings from a TOML file; behaviours the expert does not perform and
    empty lists are errors, and with `require_all` so is a behaviour missing."""
    return read_phrasings(path, known=BEHAVIOURS, require_all=require_all)


def training_phrasings(cfg: RobotConfig) -> dict[str, list[str]]:
    """The training phrasings, checked to share no phrasing with the held-out file."""
    d = robot_dir(cfg)
    train = load_phrasings(d / "phrasings_train.toml")
    held = d / "phrasings_heldout.toml"
    if held.is_file():
        seen = {t.lower() for ts in train.values() for t in ts}
        overlap = [t for ts in load_phrasings(held).values() for t in ts if t.lower() in seen]
        if overlap:
            raise PhrasingsError(f"{held}: phrasings also used in training: {overlap}")
    return train


def heldout_phrasings(cfg: RobotConfig) -> dict[str, list[str]]:
    """The held-out phrasings (never trained on), or {} when the robot has none."""
    held = robot_dir(cfg) / "phrasings_heldout.toml"
    return load_phrasings(held, require_all=False) if held.is_file() else {}


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
        sets = [load_phrasings(f.strip(), require_all=False) for f in files.split(",") if f.strip()]
        return interleave(*sets)
    return interleave(training_phrasings(cfg), heldout_phrasings(cfg))
