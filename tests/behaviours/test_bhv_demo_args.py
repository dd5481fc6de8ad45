"""`dualsys demo` refuses a start share outside [0, 1] (NaN included), naming the flag."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("flag", ["--moving-starts", "--own-starts"])
@pytest.mark.parametrize("value", ["2", "-0.1", "nan"])
def test_bad_share_is_refused_by_name(tmp_path, flag: str, value: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dualsys.cli", "demo", "--robot", "gr1", "--episodes", "1",
         "--out", str(tmp_path / "ds"), flag, value],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert f"{flag} {float(value)}: expected a share in [0, 1]" in out.stderr
    assert not (tmp_path / "ds").exists()
