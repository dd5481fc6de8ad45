"""The GR-1 model: loads, matches the config's joints both ways, mismatches are named."""

from __future__ import annotations

import re

import mujoco
import numpy as np
import pytest

from dualsys import config
from dualsys.robot.model import ModelMismatchError, build_model
from dualsys.scene import scene_of


def test_joints_match_config_both_ways(cfg, sim):
    m, jm = sim.model, sim.jmap
    model_joints = {m.joint(i).name for i in range(m.njnt) if m.jnt_type[i] != 0}
    assert set(cfg.joint_names) == model_joints - set(jm.mimic)
    assert len(jm.mimic) == 10 and all(n not in cfg.joint_names for n in jm.mimic)
    assert m.nu == cfg.n_joints == 44
    assert [m.actuator(int(i)).name for i in jm.actuator_ids] == list(cfg.joint_names)
    assert [m.joint(int(i)).name for i in jm.joint_ids] == list(cfg.joint_names)


def test_mimic_joints_are_equality_constraints(sim):
    m = sim.model
    eq = [
        (m.joint(int(m.eq_obj1id[i])).name, m.joint(int(m.eq_obj2id[i])).name) for i in range(m.neq)
    ]
    assert len(eq) == 10
    assert all(m.eq_type[i] == mujoco.mjtEq.mjEQ_JOINT for i in range(m.neq))
    assert ("L_thumb_distal_joint", "L_thumb_proximal_pitch_joint") in eq


def test_gains_limits_and_fixed_base(cfg, sim):
    m, jm = sim.model, sim.jmap
    for k, j in enumerate(cfg.joints):
        g = cfg.groups[j.group]
        a, jid = int(jm.actuator_ids[k]), int(jm.joint_ids[k])
        assert m.actuator_gainprm[a, 0] == pytest.approx(g.kp)
        assert -m.actuator_biasprm[a, 2] == pytest.approx(g.kd)
        assert m.actuator_forcerange[a, 1] == pytest.approx(j.effort)
        assert m.dof_armature[m.jnt_dofadr[jid]] == pytest.approx(g.armature)
        assert m.dof_damping[m.jnt_dofadr[jid]] == pytest.approx(g.damping)
        assert tuple(m.jnt_range[jid]) == pytest.approx((j.min, j.max), abs=1e-6)
    free = [m.joint(i).name for i in range(m.njnt) if m.jnt_type[i] == mujoco.mjtJoint.mjJNT_FREE]
    assert sorted(free) == ["box_free", "cup_free"]  # the robot base itself is fixed
    assert m.opt.timestep == cfg.sim.timestep


def test_scene_has_table_objects_and_head_camera(cfg, sim):
    m = sim.model
    top = scene_of(cfg).table.top_z
    for name in ("table_top", "cup", "box", "floor"):
        assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, name) >= 0, name
    assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "head") >= 0
    cup, box = sim.site_pos("cup"), sim.site_pos("box")
    assert cup[2] > top and box[2] > top and cup[0] > 0.25 and box[0] > 0.25


def _edited_config(tmp_path, rename: dict[str, str]) -> config.RobotConfig:
    text = config.resolve("gr1").read_text()
    for old, new in rename.items():
        text = re.sub(rf"^{old} =", f"{new} =", text, flags=re.M)
    path = tmp_path / "gr1_edit.toml"
    path.write_text(text)
    return config.load(path)


def test_mismatch_lists_both_directions(tmp_path):
    cfg = _edited_config(tmp_path, {"head_yaw_joint": "head_twist_joint"})
    with pytest.raises(ModelMismatchError) as err:
        build_model(cfg)
    msg = str(err.value)
    assert "head_twist_joint" in msg and "in the config but not in the model" in msg
    assert "head_yaw_joint" in msg and "in the model but not in the config" in msg
    assert str(cfg.path) in msg


def test_floating_base_is_configurable(tmp_path):
    text = config.resolve("gr1").read_text().replace("fixed_base = true", "fixed_base = false")
    path = tmp_path / "gr1_float.toml"
    path.write_text(text)
    m, jm = build_model(config.load(path), mesh_cell=0.02)
    names = [m.joint(i).name for i in range(m.njnt) if m.jnt_type[i] == mujoco.mjtJoint.mjJNT_FREE]
    assert "base_free" in names
    assert np.all(jm.qpos_adr >= 7)
