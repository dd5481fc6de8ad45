"""A robot's behaviour vocabulary, as data: behaviour names and their instruction phrasings.

Format: a `[behaviours]` table mapping behaviour name -> list of phrasings, e.g.
`touch_red_cup = ["touch the red cup", ...]`, in TOML files beside the robot config
(`robots/<robot>/phrasings_train.toml`, `robots/<robot>/phrasings_heldout.toml`).

The runtime reads it knowing nothing of how a behaviour is performed: System 2 grounds
instructions in the phrasings its fusion head was trained on (`[system2] phrasings`). The
learning wing (`dualsys.behaviours.phrasings`) reads the same files through `read_phrasings`
and adds its own check that every name is a behaviour its scripted expert performs. Imports
only the standard library and the config.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

from dualsys.config import RobotConfig


class PhrasingsError(ValueError):
    """A phrasings file is missing or malformed; names the file and the key."""


def robot_dir(cfg: RobotConfig) -> Path:
    """robots/<name>/ beside the robot's TOML file."""
    return cfg.path.parent / cfg.path.stem


def read_phrasings(
    path: str | Path, known: Sequence[str] | None = None, require_all: bool = False
) -> dict[str, list[str]]:
    """behaviour -> phrasings from a TOML file. Empty lists and non-strings are errors; with
    `known`, so are behaviours outside it and (with `require_all`) behaviours of it missing."""
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
        if known is not None and name not in known:
            raise PhrasingsError(
                f"{path}: behaviours.{name}: unknown behaviour (known: {', '.join(known)})"
            )
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise PhrasingsError(f"{path}: behaviours.{name}: expected a non-empty list of strings")
        out[name] = [t.strip() for t in texts]
    missing = [b for b in known or () if b not in out]
    if require_all and missing:
        raise PhrasingsError(f"{path}: behaviours missing: {', '.join(missing)}")
    return out
