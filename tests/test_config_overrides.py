"""`--set section.key=value` overrides: applied before validation, carried to child processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dualsys import config
from dualsys.config import ConfigError

GR1 = config.ROBOTS_DIR / "gr1.toml"


def test_override_changes_the_value_and_is_recorded():
    cfg = config.load(GR1, ["rates.control_hz=500", "budgets.spin_margin_us=400"])
    assert cfg.rates.control_hz == 500 and cfg.budgets.spin_margin_us == 400
    assert cfg.overrides == ("rates.control_hz=500", "budgets.spin_margin_us=400")
    assert config.load(GR1, []).rates.control_hz == 200


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("rates.control_hz=1000", "spin_margin_us"),  # validated like a written value
        ("rates.bogus=1", "unknown key"),
        ("ratescontrol_hz=1", "expected section.key=value"),
        ("a.b.c=1", "expected section.key=value"),
        ("rates.control_hz", "expected section.key=value"),
        ('rates.control_hz="fast"', "control_hz"),
        ("robot.name=[1, 2]", "robot.name"),
    ],
)
def test_bad_overrides_name_the_key(item, reason):
    with pytest.raises(ConfigError) as exc:
        config.load(GR1, [item])
    assert reason in str(exc.value)


def test_too_many_overrides_refused():
    with pytest.raises(ConfigError, match="at most"):
        config.load(GR1, ["rates.control_hz=200"] * (config.MAX_OVERRIDES + 1))


def test_environment_carries_overrides_to_a_child_process():
    code = "from dualsys import config; print(config.load_robot('gr1').rates.control_hz)"
    env_run = subprocess.run(
        [sys.executable, "-c", code],
        env={"DUALSYS_SET": "rates.control_hz=500;budgets.spin_margin_us=400", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert env_run.stdout.strip() == "500"


def test_rate_overrides_keep_budgets_in_time():
    gr1 = config.load(GR1, [])
    items = config.rate_overrides(gr1, 1000)
    cfg = config.load(GR1, items)
    assert cfg.rates.control_hz == 1000
    # the same 25 ms of misses in a row before hold, a margin within 20% of the 1 ms period
    assert cfg.budgets.max_consecutive_misses == 25
    assert cfg.budgets.spin_margin_us == 200
    assert config.load(GR1, config.rate_overrides(gr1, 500)).budgets.max_consecutive_misses == 12
    with pytest.raises(ConfigError, match="positive"):
        config.rate_overrides(gr1, 0)
    # a rate the rest of the config cannot follow is refused like a written one
    with pytest.raises(ConfigError, match="action_hz"):
        config.load(GR1, config.rate_overrides(gr1, 333))
    with pytest.raises(ConfigError, match="sim.timestep"):
        config.load(GR1, config.rate_overrides(gr1, 2000))
