"""Optional extras in tests: install one into the repo's .venv on first use, or skip saying why."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def ensure_extra(extra: str, available: Callable[[], bool], package: str) -> None:
    """Make `available()` true by running `bin/setup --EXTRA` in the repo's own .venv, or skip
    the test naming the missing `package` and the command that installs it."""
    if available():
        return
    if Path(sys.prefix) != ROOT / ".venv":
        pytest.skip(f"{package} missing and this is not the repo's .venv: bin/setup --{extra}")
    r = subprocess.run([str(ROOT / "bin/setup"), f"--{extra}"], capture_output=True, timeout=600)
    importlib.invalidate_caches()
    if r.returncode or not available():
        pytest.skip(f"bin/setup --{extra} could not install {package}: {r.stderr[-500:]!r}")
