"""Embodiment config loading: the shipped configs load; every bad case names file and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dualsys import config
from dualsys.cli import main
from dualsys.config import ConfigError

GR1 = config.ROBOTS_DIR / "gr1.toml"


def test_gr1_loads_with_groot_layout() -> None:
    cfg = config.load(GR1)
    assert cfg.n_joints == 44
    sizes = {name: len(g.joints) for name, g in cfg.groups.items()}
    assert sizes == {
        "left_arm": 7,
        "right_arm": 7,
        "left_hand": 6,
        "right_hand": 6,
        "left_leg": 6,
        "right_leg": 6,
        "head": 3,
        "waist": 3,
    }
    assert len(set(cfg.joint_names)) == 44
    controlled = {g.name for g in cfg.groups.values() if g.controlled}
    assert controlled == {"left_arm", "right_arm", "left_hand", "right_hand", "waist"}
    assert len(cfg.controlled_indices) == 29
    assert cfg.rates.control_hz % cfg.rates.action_hz == 0
    lim = cfg.limits()
    assert (lim["min"] <= lim["default"]).all() and (lim["default"] <= lim["max"]).all()
    assert cfg.cores.system2 == 0 and cfg.cores.system1 == 1


@pytest.mark.parametrize("path", config.available(), ids=lambda p: p.stem)
def test_every_shipped_robot_loads(path: Path) -> None:
    cfg = config.load(path)
    assert cfg.name == path.stem


def _variant(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    text = GR1.read_text()
    assert old in text, old
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, count))
    return path


BAD_CASES = [
    # (old, new, key named in the error, words in the reason)
    (
        "control_hz = 200",
        "control_hz = 200\ncontrol_hz_typo = 3",
        "rates.control_hz_typo",
        "unknown",
    ),
    ("euler_steps = 4", "", "policy.euler_steps", "missing"),
    ("chunk_horizon = 16", 'chunk_horizon = "16"', "policy.chunk_horizon", "integer"),
    ("action_hz = 50", "action_hz = 30", "rates.action_hz", "multiple"),
    ("system2_min_hz = 7.0", "system2_min_hz = 12.0", "rates.system2_min_hz", "<="),
    (
        'left_elbow_pitch_joint = { group = "left_arm", min = -2.27, max = 2.27',
        'left_elbow_pitch_joint = { group = "left_arm", min = 2.27, max = -2.27',
        "joints.left_elbow_pitch_joint.min",
        "> max",
    ),
    (
        "default = 0.45",
        "default = 3.0",
        "joints.head_pitch_joint.default",
        "outside limits",
    ),
    ('group = "waist"', 'group = "torso"', "joints.waist_yaw_joint.group", "unknown group"),
    ("miss_rate = 0.002", "miss_rate = 1.5", "budgets.miss_rate", "fraction"),
    ("fixed_base = true", "fixed_base = 1", "sim.fixed_base", "true or false"),
    ('precision = "fp32-ort"', 'precision = "fp8"', "policy.precision", "one of"),
    ('state = "ipc://{run}/state.sock"', 'state = "udp://x"', "endpoints.state", "ipc://"),
    ("timestep = 0.001", "timestep = 0.003", "sim.timestep", "whole multiple"),
    ("replan_below = 8", "replan_below = 16", "policy.replan_below", "chunk_horizon"),
    ("switch_settle_ms = 1000", "switch_settle_ms = -5", "policy.switch_settle_ms", ">= 0"),
    (
        'phrasings = "gr1/phrasings_train.toml"',
        'phrasings = "gr1/no_such_phrasings.toml"',
        "system2.phrasings",
        "does not exist",
    ),
    (
        "grounding_temperature = 0.02",
        "grounding_temperature = -0.1",
        "system2.grounding_temperature",
        ">= 0",
    ),
]


@pytest.mark.parametrize("old,new,key,reason", BAD_CASES, ids=[c[2] for c in BAD_CASES])
def test_bad_config_names_file_and_key(tmp_path: Path, old, new, key, reason) -> None:
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    err = info.value
    assert err.key == key
    assert reason in err.reason
    assert str(path) in str(err)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text("[robot\nname = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


def test_check_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(GR1)]) == 0
    assert "44 joints" in capsys.readouterr().out
    bad = _variant(tmp_path, "action_hz = 50", "action_hz = 30")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(rf"{re.escape(str(bad))}: rates\.action_hz: ", err)


def test_robot_name_suggestions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="did you mean gr1"):
        config.resolve("gr2")
    assert main(["up", "--robot", "gr2", "--duration", "1"]) == 2
    assert "did you mean gr1" in capsys.readouterr().err


def test_robot_by_path(tmp_path: Path) -> None:
    own = tmp_path / "myrobot.toml"
    own.write_text(GR1.read_text().replace('name = "gr1"', 'name = "myrobot"'))
    assert config.load_robot(str(own)).name == "myrobot"


def test_robots_cli_lists(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["robots"]) == 0
    assert "gr1" in capsys.readouterr().out
