"""Task packs: found through the registry by the robot config's `[task] pack`, unknown or
missing names fail naming file and key, and the GR-1 pack reads sizes and heights from the
scene file (not constants of its own)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dualsys import config
from dualsys.behaviours.criteria import Trajectory
from dualsys.config import ConfigError
from dualsys.tasks import TASK_PACKS, TaskPack, task_pack

GR1 = config.load_robot("gr1")
SCENE = Path(GR1.path).parent / "gr1" / "scene.toml"


def _with_scene(tmp_path: Path, old: str, new: str) -> config.RobotConfig:
    """GR-1 with a copy of its scene file, `old` replaced by `new`."""
    text = SCENE.read_text()
    assert old in text
    path = tmp_path / "scene.toml"
    path.write_text(text.replace(old, new))
    return config.load(GR1.path, overrides=[f"sim.scene={str(path)!r}"])


def test_the_config_names_its_pack_and_the_registry_finds_it():
    pack = task_pack(GR1)
    assert isinstance(pack, TaskPack) and type(pack) is TASK_PACKS.get("gr1_table")
    assert pack.pack_name == "gr1_table" and pack.cfg is GR1
    assert "touch_red_cup" in pack.behaviours and pack.lead_s > 0
    assert pack.lead_in("return_to_rest", 0) and pack.lead_in("touch_red_cup", 0) is None


def test_unknown_pack_is_named_with_close_matches():
    cfg = config.load(GR1.path, overrides=["task.pack=gr1_tabel"])
    with pytest.raises(ConfigError) as err:
        task_pack(cfg)
    assert err.value.key == "task.pack" and err.value.path == str(GR1.path)
    assert "no task pack named 'gr1_tabel'" in str(err.value)
    assert "did you mean gr1_table" in str(err.value)


def test_missing_task_table_and_unknown_key(tmp_path):
    text = GR1.path.read_text()
    start = text.index("[task]")
    path = tmp_path / "no_task.toml"
    path.write_text(text[:start] + text[text.index("[sim]") :])
    with pytest.raises(ConfigError, match=r"task.pack: no task pack: add \[task\]"):
        task_pack(config.load(path))
    with pytest.raises(ConfigError, match="task.expert: unknown key"):
        config.load(GR1.path, overrides=["task.expert=x"])


def _palms_at(z: float) -> Trajectory:
    t = np.linspace(0.0, 2.0, 101)
    hands = np.zeros((len(t), 4, 3))
    hands[:, :, 0], hands[:, :, 2] = 0.2, z
    return Trajectory(t, np.zeros((len(t), GR1.n_joints)), hands, {})


def test_heights_are_measured_from_the_scene_base(tmp_path):
    """Arms raised to 1.72 m: raised for a robot whose pelvis is at 0.95 m (threshold 0.75 m
    above it), not for one standing 10 cm higher. Absolute heights could not tell them apart."""
    traj = _palms_at(1.72)
    assert task_pack(GR1).score("raise_both_arms", traj).success
    taller = _with_scene(tmp_path, "base_height = 0.95", "base_height = 1.05")
    sc = task_pack(taller).score("raise_both_arms", traj)
    assert not sc.success and "min_z 1.72 (needs >= 1.8)" in sc.reason


def test_object_sizes_come_from_the_scene(tmp_path, sim):
    """The expert aims TOUCH_ABOVE over the cup's top: its half height is the scene file's."""
    from dualsys.tasks.gr1_table.expert import TOUCH_ABOVE

    tall = _with_scene(tmp_path, "size = [0.035, 0.05]", "size = [0.035, 0.09]")
    centre = np.array([0.4, -0.15, 0.77])
    for cfg, half in ((GR1, 0.05), (tall, 0.09)):
        pack = task_pack(cfg)
        expert = pack.expert(pack.kinematics(sim.model, sim.jmap.qpos_adr))
        target = expert.touch_target("cup", centre)
        assert target[2] == pytest.approx(centre[2] + half + TOUCH_ABOVE)
