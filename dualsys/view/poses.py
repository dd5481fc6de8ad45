"""Link poses of the embodiment from its joint positions: MuJoCo forward kinematics on the
robot's own model (URDF/MJCF through `dualsys.robot.model`), nothing dynamic.

Mimic joints (hand fingers driven by one config joint) follow their leader through the model's
joint equalities, so the fingers close in the view as they do in the simulation.
"""

from __future__ import annotations

import mujoco
import numpy as np

from dualsys.config import RobotConfig
from dualsys.robot.model import build_model


class RobotPoses:
    """World poses of every robot body for a config-ordered joint vector q.

    Bodies of free objects (the scene's cup and box, whose poses are not in RobotState) are
    left out; static bodies (the table) keep their model pose. Not for the 200 Hz thread (it
    runs in the viewer and the recorder, at the view's rate)."""

    def __init__(self, cfg: RobotConfig, model: mujoco.MjModel | None = None) -> None:
        if model is None:
            model, jmap = build_model(cfg)
            adr = jmap.qpos_adr
        else:
            ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in cfg.joint_names]
            adr = model.jnt_qposadr[np.array(ids)]
        self.model, self.data = model, mujoco.MjData(model)
        self.qpos_adr = np.asarray(adr)
        self.n_joints = cfg.n_joints
        mujoco.mj_resetData(model, self.data)
        # mimic joints: qpos[a] = c0 + c1 * qpos[b] (MuJoCo's joint equality, linear part)
        self.mimic = [
            (
                int(model.jnt_qposadr[model.eq_obj1id[e]]),
                int(model.jnt_qposadr[model.eq_obj2id[e]]),
                float(model.eq_data[e, 0]),
                float(model.eq_data[e, 1]),
            )
            for e in range(model.neq)
            if model.eq_type[e] == mujoco.mjtEq.mjEQ_JOINT and model.eq_obj2id[e] >= 0
        ]
        free_bodies = {
            int(model.jnt_bodyid[j])
            for j in range(model.njnt)
            if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE and model.jnt_bodyid[j] != 1
        }
        self.body_ids = [
            b
            for b in range(1, model.nbody)
            if b not in free_bodies and self._root(b) not in free_bodies
        ]
        self.names = [
            mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) or f"body{b}"
            for b in self.body_ids
        ]

    def _root(self, b: int) -> int:
        while self.model.body_parentid[b] != 0:
            b = int(self.model.body_parentid[b])
        return b

    def update(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (n, 3) and quaternions (n, 4, w x y z) of `self.names` for joint vector q
        (config order, length n_joints). Raises ValueError for a wrong length or a NaN."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.n_joints,) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint vector: expected {self.n_joints} finite values, got {q.shape}")
        d = self.data
        d.qpos[self.qpos_adr] = q
        for a, b, c0, c1 in self.mimic:
            d.qpos[a] = c0 + c1 * d.qpos[b]
        mujoco.mj_kinematics(self.model, d)
        return d.xpos[self.body_ids].copy(), d.xquat[self.body_ids].copy()
