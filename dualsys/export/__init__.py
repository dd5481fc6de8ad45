"""Datasets other robot-learning tools read: dualsys demonstrations as a LeRobotDataset v3
(`dualsys export --format lerobot`), and such datasets read back for `dualsys train`.

mp4 encoding/decoding needs PyAV (`av`), part of the optional extra `dualsys[export]`
(`bin/setup --export`); the default install stays as it is."""

from __future__ import annotations

import importlib.util

INSTALL_HINT = (
    "LeRobot export/import writes and reads mp4 through PyAV: "
    "pip install 'dualsys[export]'  (in this repo: bin/setup --export)"
)


def have_av() -> bool:
    """True when PyAV can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("av") is not None
    except (ImportError, ValueError):
        return False
