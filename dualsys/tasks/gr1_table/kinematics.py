"""Forward and inverse kinematics of the arms on a scratch copy of the MuJoCo model.

`Kinematics` never touches the simulation's own `MjData`: it keeps a private one, so the
expert can plan (IK) and the scorer can recover hand positions from recorded joint vectors
without disturbing a running simulation. IK is damped least squares on one arm's 7 joints
(`mj_jacSite` of the palm site), clamped to the joint limits, with a weak pull towards a
posture so the redundant arm stays natural.
"""

from __future__ import annotations

import mujoco
import numpy as np

from dualsys.config import RobotConfig
from dualsys.scene import scene_of

SIDES = ("left", "right")


class Kinematics:
    """FK of the palm sites and DLS IK for one arm at a time (config joint order vectors)."""

    def __init__(self, cfg: RobotConfig, model: mujoco.MjModel, qpos_adr: np.ndarray) -> None:
        self.cfg = cfg
        self.model = model
        self.data = mujoco.MjData(model)
        self.qadr = np.asarray(qpos_adr)
        dof = {n: model.jnt_dofadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)]
               for n in cfg.joint_names}  # fmt: skip
        self.dof = np.array([dof[n] for n in cfg.joint_names])
        lim = cfg.limits()
        self.lo, self.hi = lim["min"], lim["max"]
        self.arm = {
            s: np.array([i for i, j in enumerate(cfg.joints) if j.group == f"{s}_arm"])
            for s in SIDES
        }
        self.site = {
            s: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f"{s}_hand") for s in SIDES
        }
        hand = scene_of(cfg).hand_sites
        self.tip = {
            s: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, hand[f"{s}_hand"].tip)
            for s in SIDES
        }
        self._jac = np.zeros((3, model.nv))

    def _set(self, q: np.ndarray) -> None:
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)

    def hands(self, q: np.ndarray) -> np.ndarray:
        """(2, 3) palm positions (left, right) for joint vector q (config order)."""
        self._set(q)
        return np.stack([self.data.site_xpos[self.site[s]].copy() for s in SIDES])

    def tips(self, q: np.ndarray) -> np.ndarray:
        """(2, 3) middle-finger tip positions (left, right) for joint vector q."""
        self._set(q)
        return np.stack([self.data.xpos[self.tip[s]].copy() for s in SIDES])

    def hands_batch(self, qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, 2, 3) palm and (T, 2, 3) fingertip positions for a (T, n_joints) trajectory."""
        out = [(self.hands(q), self.tips(q)) for q in qs]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])

    def ik(
        self,
        side: str,
        target: np.ndarray,
        q0: np.ndarray,
        posture: np.ndarray | None = None,
        iters: int = 200,
        damping: float = 0.05,
        posture_gain: float = 0.02,
        tol: float = 1e-3,
        extra: tuple[str, ...] = (),
        point: str = "palm",
    ) -> tuple[np.ndarray, float]:
        """Joint vector reaching `target` with `side`'s palm (other joints as in q0).

        point: "palm" (the palm site) or "tip" (the middle fingertip).
        extra: more joints (by name, e.g. the waist) that the solver may move too.
        Returns (q, residual distance in m). The residual is honest: an unreachable target
        gives the closest pose found and its error.
        """
        q = np.array(q0, dtype=np.float64)
        idx = self.arm[side]
        if extra:
            idx = np.concatenate([idx, [self.cfg.joint_names.index(n) for n in extra]])
        post = q0 if posture is None else posture
        err = np.inf
        for _ in range(iters):
            self._set(q)
            mujoco.mj_comPos(self.model, self.data)
            if point == "tip":
                cur = self.data.xpos[self.tip[side]]
            else:
                cur = self.data.site_xpos[self.site[side]]
            e = np.asarray(target) - cur
            err = float(np.linalg.norm(e))
            if err < tol:
                break
            if point == "tip":
                mujoco.mj_jacBody(self.model, self.data, self._jac, None, self.tip[side])
            else:
                mujoco.mj_jacSite(self.model, self.data, self._jac, None, self.site[side])
            J = self._jac[:, self.dof[idx]]
            JJt = J @ J.T + damping**2 * np.eye(3)
            step = J.T @ np.linalg.solve(JJt, e)
            null = np.eye(len(idx)) - np.linalg.pinv(J) @ J
            step += null @ (posture_gain * (post[idx] - q[idx]) * 10)
            q[idx] = np.clip(q[idx] + np.clip(step, -0.2, 0.2), self.lo[idx], self.hi[idx])
        return q, err
