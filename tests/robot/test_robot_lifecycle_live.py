"""A normal `dualsys up` start and stop trips no robot safety mechanism (issue 17, point 8).

Before: every run logged "command watchdog: no valid command for 50 ms; holding" at start-up
(the control loop's warm-up burst says "hold", then the loop starts a few hundred ms later)
and tripped it again at the stop (the stop ramp ends in "hold", then the stream ends). That a
real gap while following still trips the watchdog is tested in test_robot_hostile.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.supervisor.test_up import _up

pytestmark = [pytest.mark.slow]


def test_normal_start_and_stop_trip_nothing(tmp_path: Path) -> None:
    report_path = tmp_path / "R.json"
    proc = _up(tmp_path, "--duration", "8", "--untrained", "--report", str(report_path))
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    robot_log = (tmp_path / "logs" / "robot.log").read_text()
    assert "command watchdog" not in out + robot_log, robot_log
    report = json.loads(report_path.read_text())
    assert report["clean_exit"] is True
    assert report["robot"]["watchdog_trips"] == 0
    assert report["robot"]["velocity_trips"] == 0
    robot = json.loads((tmp_path / "run" / "robot.json").read_text())
    assert robot["commands"] > 100
    assert robot["refused"] == {}, robot["refused"]  # no jump refusal in a normal run
    assert robot["state_stale_trips"] == 0 and robot["state_stale_ticks"] == 0
