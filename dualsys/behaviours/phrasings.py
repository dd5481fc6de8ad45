"""Instruction phrasings per behaviour, from TOML files beside the robot config.

Format: a `[behaviours]` table mapping behaviour name -> list of phrasings, e.g.
`touch_red_cup = ["touch the red cup", ...]`. Training phrasings live in
`robots/<robot>/phrasings_train.toml`, held-out ones in `robots/<robot>/phrasings_heldout.toml`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from dualsys.behaviours.expert import BEHAVIOURS
from dualsys.config import RobotConfig


class PhrasingsError(ValueError):
    """A phrasings file is missing or malformed; names the file and the key."""


def robot_dir(cfg: RobotConfig) -> Path:
    """robots/<name>/ beside the robot's TOML file."""
    return cfg.path.parent / cfg.path.stem


def load_phrasings(path: str | Path, require_all: bool = True) -> dict[str, list[str]]:
    """behaviour -> phrasings from a TOML file; unknown behaviours and empty lists are errors."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PhrasingsError(f"{path}: phrasings file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise PhrasingsError(f"{path}: not valid TOML: {exc}") from None
    table = doc.get("behaviours")
    if not isinstance(table, dict):
        raise PhrasingsError(f"{path}: expected a [behaviours] table")
    out: dict[str, list[str]] = {}
    for name, texts in table.items():
        if name not in BEHAVIOURS:
            raise PhrasingsError(
                f"{path}: behaviours.{name}: unknown behaviour (known: {', '.join(BEHAVIOURS)})"
            )
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise PhrasingsError(f"{path}: behaviours.{name}: expected a non-empty list of strings")
        out[name] = [t.strip() for t in texts]
    missing = [b for b in BEHAVIOURS if b not in out]
    if require_all and missing:
        raise PhrasingsError(f"{path}: behaviours missing: {', '.join(missing)}")
    return out


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
