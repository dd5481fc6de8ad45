"""Without the optional view extra, every --view says exactly how to get it and exits 2,
before starting anything. rerun-sdk is hidden from a real `dualsys` process by an import
blocker (what a default install without the extra looks like to Python)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dualsys.view import EXIT_NO_VIEWER, INSTALL_HINT

BLOCK = """
import sys
class NoRerun:
    def find_spec(self, name, path=None, target=None):
        if name == "rerun" or name.startswith(("rerun.", "rerun_bindings")):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoRerun())
from dualsys.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "--robot", "gr1", "--untrained", "--headless", "--duration", "1", "--view"],
        ["sim", "--robot", "gr1", "--duration", "1", "--view"],
        ["eval", "--robot", "gr1", "--untrained", "--episodes", "1", "--view"],
        ["view", "--robot", "gr1"],
        ["replay", "missing.mcap", "--view"],
    ],
    ids=lambda a: a[0],
)
def test_view_without_extra_says_how(argv: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    if argv[0] != "replay":
        argv = [*argv, "--run-dir", str(run_dir)]
    r = subprocess.run(
        [sys.executable, "-c", BLOCK, *argv], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == EXIT_NO_VIEWER, r.stderr[-2000:]
    assert INSTALL_HINT in r.stderr
    assert "pip install 'dualsys[view]'" in r.stderr and "bin/setup --view" in r.stderr
    assert not run_dir.exists()  # nothing was started
