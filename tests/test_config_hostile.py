"""Configs that validate are configs that run (issue 17, point 7).

Each case is a copy of robots/gr1.toml with one value that loaded (or passed `dualsys check`)
before but breaks the run: a spin margin near the period, a watchdog too short or too long, a
stats rate the loop cannot serve, a stale limit under two System 2 periods, sizes that would
allocate without bound, paths that climb out of the config's directory, joint limits beyond
the model's, camera frames larger than the camera link carries. Each refusal must name the
file, the key and the reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dualsys import config
from dualsys.cli import main
from dualsys.config import ConfigError

GR1 = config.ROBOTS_DIR / "gr1.toml"
ELBOW = 'left_elbow_pitch_joint = { group = "left_arm", min = -2.27, max = 2.27, velocity = 5.24'


def _variant(path: Path, *edits: tuple[str, str]) -> Path:
    text = GR1.read_text()
    for old, new in edits:
        assert text.count(old) >= 1, old
        text = text.replace(old, new, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# (old, new, key named in the error, words in the reason): refused by config.load
LOAD_CASES = [
    ("spin_margin_us = 1000", "spin_margin_us = 4000", "budgets.spin_margin_us", "period"),
    (
        "command_timeout_ms = 50.0",
        "command_timeout_ms = 5.0",
        "budgets.command_timeout_ms",
        "2 control periods",
    ),
    (
        "command_timeout_ms = 50.0",
        "command_timeout_ms = 5000.0",
        "budgets.command_timeout_ms",
        "1000",
    ),
    ("stats_hz = 2.0", "stats_hz = 50.0", "rates.stats_hz", "can serve"),
    ("stats_hz = 2.0", "stats_hz = 1e-300", "rates.stats_hz", "can serve"),
    ("stats_hz = 2.0", "stats_hz = inf", "rates.stats_hz", "finite"),
    (
        "latent_stale_ms = 500.0",
        "latent_stale_ms = 200.0",
        "budgets.latent_stale_ms",
        "System 2 periods",
    ),
    (
        "latent_dead_ms = 3000.0",
        "latent_dead_ms = 500.0",
        "budgets.latent_dead_ms",
        "> latent_stale_ms",
    ),
    ("latent_dead_ms = 3000.0", "latent_dead_ms = 1e300", "budgets.latent_dead_ms", "<="),
    ("latent_stale_ms = 500.0", "latent_stale_ms = nan", "budgets.latent_stale_ms", "finite"),
    ("system2_min_hz = 7.0", "system2_min_hz = 1e-300", "rates.system2_min_hz", ">="),
    ("control_hz = 200", "control_hz = 1000000000", "rates.control_hz", "<="),
    ("width = 128", "width = 1000000000", "cameras[0].width", "<= 4096"),
    ("height = 128", "height = 1000000000", "cameras[0].height", "<= 4096"),
    ("fovy = 70.0", "fovy = 1e300", "cameras[0].fovy", "<="),
    ("chunk_horizon = 16", "chunk_horizon = 1000000000", "policy.chunk_horizon", "<="),
    ("euler_steps = 4", "euler_steps = 1000000000", "policy.euler_steps", "<="),
    ("width = 256", "width = 1000000000", "policy.width", "<="),
    ("layers = 4", "layers = 1000000000", "policy.layers", "<="),
    ("threads = 1", "threads = 1000000000", "policy.threads", "<="),
    ("latent_dim = 512", "latent_dim = 1000000000", "system2.latent_dim", "<="),
    ("system1 = 1", "system1 = 1000000000", "cores.system1", "<="),
    ("timestep = 0.001", "timestep = 0.000001", "sim.timestep", "steps per control tick"),
]


@pytest.mark.parametrize(
    "old,new,key,reason", LOAD_CASES, ids=[f"{c[2]}={c[1].split('= ')[-1]}" for c in LOAD_CASES]
)
def test_load_refuses_values_that_break_the_run(tmp_path: Path, old, new, key, reason) -> None:
    path = _variant(tmp_path / "bad.toml", (old, new))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    err = info.value
    assert (err.key, str(path)) == (key, err.path), err
    assert reason in err.reason, err
    assert str(path) in str(err) and key in str(err)


def test_shipped_values_sit_inside_the_new_bounds() -> None:
    cfg = config.load(GR1)
    period_us = 1e6 / cfg.rates.control_hz
    assert cfg.budgets.spin_margin_us <= 0.5 * period_us
    assert 2 * period_us / 1000 <= cfg.budgets.command_timeout_ms <= 1000
    assert cfg.rates.stats_hz <= cfg.rates.control_hz / 10
    assert cfg.budgets.latent_stale_ms >= 2 * 1000 / cfg.rates.system2_min_hz
    assert cfg.budgets.latent_dead_ms > cfg.budgets.latent_stale_ms


# ------------------------------------------------------------------ paths out of the directory

PATH_KEYS = [
    ('checkpoint = "gr1/policy.safetensors"', 'checkpoint = "{}"', "policy.checkpoint"),
    ('phrasings = "gr1/phrasings_train.toml"', 'phrasings = "{}"', "system2.phrasings"),
    ('encoder = "builtin"', 'encoder = "builtin"\nmodel_dir = "{}"', "system2.model_dir"),
    ('model = "fourier:gr1t2_fourier_hand_6dof.urdf"', 'model = "{}"', "sim.model"),
    ("[cores]", '[security]\nkeys_dir = "{}"\n\n[cores]', "security.keys_dir"),
]


@pytest.mark.parametrize("old,new,key", PATH_KEYS, ids=[c[2] for c in PATH_KEYS])
def test_relative_paths_cannot_leave_the_config_dir(tmp_path: Path, old, new, key) -> None:
    # the target exists, so only the "leaves the directory" rule can refuse it
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("")
    path = _variant(tmp_path / "robots" / "bad.toml", (old, new.format("../outside/x")))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    err = info.value
    assert err.key == key and err.path == str(path)
    assert "leaves the config's directory" in err.reason
    # stacked inside a subdirectory it still climbs out
    sneaky = _variant(tmp_path / "robots" / "bad2.toml", (old, new.format("gr1/../../outside/x")))
    with pytest.raises(ConfigError, match="leaves the config's directory"):
        config.load(sneaky)


def test_absolute_paths_outside_are_allowed(tmp_path: Path) -> None:
    policy = config.ROBOTS_DIR / "gr1" / "policy.safetensors"
    path = _variant(
        tmp_path / "ok.toml",
        ('checkpoint = "gr1/policy.safetensors"', f'checkpoint = "{policy}"'),
    )
    assert config.load(path).policy.checkpoint == policy.resolve()


# ------------------------------------------------------------------ `dualsys check`: model, bus

CHECK_CASES = [
    (
        ELBOW,
        ELBOW.replace("min = -2.27", "min = -3.0"),
        "joints.left_elbow_pitch_joint.min",
        "below the model's range",
    ),
    (
        ELBOW,
        ELBOW.replace("max = 2.27", "max = 3.0"),
        "joints.left_elbow_pitch_joint.max",
        "above the model's range",
    ),
    (
        ELBOW,
        ELBOW.replace("velocity = 5.24", "velocity = 50.0"),
        "joints.left_elbow_pitch_joint.velocity",
        "velocity limit 5.24",
    ),
    (
        ELBOW + ", effort = 30.3",
        ELBOW + ", effort = 300.0",
        "joints.left_elbow_pitch_joint.effort",
        "effort limit 30.3",
    ),
    (
        "width = 128\nheight = 128",
        "width = 2048\nheight = 2048",
        "cameras[0].width",
        "message limit",
    ),
    (
        "width = 128\nheight = 128",
        "width = 800\nheight = 600",
        "cameras[0].width",
        "offscreen buffer",
    ),
    ('name = "head"', 'name = "' + "h" * 65 + '"', "cameras[0].name", "bus allows"),
    (
        "max_instruction_chars = 512",
        "max_instruction_chars = 100000",
        "system2.max_instruction_chars",
        "bus carries",
    ),
]


@pytest.mark.parametrize("old,new,key,reason", CHECK_CASES, ids=[c[2] for c in CHECK_CASES])
def test_check_refuses_what_the_model_or_bus_cannot_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old, new, key, reason
) -> None:
    path = _variant(tmp_path / "bad.toml", (old, new))
    config.load(path)  # the file alone is fine: only the model or the bus can tell
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dualsys: error: {path}: {key}: "), err
    assert reason in err, err


def test_simulation_start_refuses_limits_beyond_the_model(tmp_path: Path) -> None:
    from dualsys.robot.simulation import Simulation

    path = _variant(tmp_path / "bad.toml", (ELBOW, ELBOW.replace("max = 2.27", "max = 3.0")))
    sim = Simulation(config.load(path))
    with pytest.raises(ConfigError, match=r"joints\.left_elbow_pitch_joint\.max"):
        sim.configure()


def test_config_loading_stays_light() -> None:
    # System 2 loads configs and must not load MuJoCo; the model checks live in dualsys check
    code = (
        "import sys; from dualsys import config; config.load_robot('gr1'); "
        "assert 'mujoco' not in sys.modules, 'config.load imported mujoco'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
