"""The MuJoCo simulation of an embodiment, as a robot driver (`mujoco`, the default).

`Simulation` steps without any wall clock (`step`, `advance`), so dataset generation and
offline evaluation can drive it as fast as the CPU allows; the robot process paces it to the
wall clock. Besides the driver lifecycle it exposes what scripted experts need: site and body
positions (hands, cup, box), object placement and randomisation, and camera rendering.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualsys.config import RobotConfig
from dualsys.robot.config_check import check_model_limits
from dualsys.robot.interface import DAMP, DriverInfo, JointState, RobotDriver, register_driver
from dualsys.robot.model import MESH_CELL, build_model
from dualsys.scene import scene_of


@register_driver("mujoco")
class Simulation(RobotDriver):
    """MuJoCo physics of the robot in its scene (`dualsys.scene`: table and objects, if any).

    read_state / write_command / advance / step are safe in the robot loop thread (no
    allocation beyond small numpy temporaries). `render` is for offline use (it owns a GL
    context, so call it from one thread); the robot process renders in its own frame thread.
    """

    def __init__(
        self, cfg: RobotConfig, run_dir: str | Path | None = None, mesh_cell: float = MESH_CELL
    ) -> None:
        super().__init__(cfg, run_dir)
        self.mesh_cell = mesh_cell
        self.scene = scene_of(cfg)
        self.model = None
        self.data = None
        self._renderer = None

    @property
    def info(self) -> DriverInfo:
        return DriverInfo(simulated=True, cameras=tuple(c.name for c in self.cfg.cameras))

    # ------------------------------------------------------------------ lifecycle

    def configure(self) -> None:
        """Build and compile the model (~0.5 s), allocate data and index arrays."""
        import mujoco

        self._mj = mujoco
        self.model, self.jmap = build_model(self.cfg, self.mesh_cell)
        check_model_limits(self.cfg, self.model, self.jmap)  # config limits inside the model's
        self.data = mujoco.MjData(self.model)
        m, act = self.model, self.jmap.actuator_ids
        self._qadr, self._vadr, self._act = self.jmap.qpos_adr, self.jmap.qvel_adr, act
        self._kp = m.actuator_gainprm[act, 0].copy()
        self._kv = -m.actuator_biasprm[act, 2].copy()
        self._ff = self._kv / self._kp
        self._gain0 = m.actuator_gainprm[:, 0].copy()
        self._bias1 = m.actuator_biasprm[:, 1].copy()
        self._damped = False
        self._state = JointState.zeros(self.n)
        self._object_qadr = {
            name: m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{name}_free")]
            for name in self.scene.object_names
            if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{name}_free") >= 0
        }
        self.limits = self.cfg.limits()
        super().configure()

    def activate(self) -> None:
        """Reset the scene: robot at its default pose, objects at their nominal places."""
        super().activate()
        self.reset()

    def deactivate(self) -> None:
        """Switch to damping only; free the offline renderer."""
        if self.data is not None:
            self._set_damped(True)
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().deactivate()

    # ------------------------------------------------------------------ driver API

    def reset(self, q: np.ndarray | None = None) -> None:
        """Robot at pose q (default pose when None), at rest, tracking q; objects nominal."""
        mj, m, d = self._mj, self.model, self.data
        mj.mj_resetData(m, d)
        q = self.limits["default"] if q is None else np.asarray(q, dtype=np.float64)
        d.qpos[self._qadr] = q
        d.ctrl[self._act] = q
        self._set_damped(False)
        for name in self._object_qadr:
            x, y = self.scene.object(name).xy
            self.set_object_pose(name, (x, y, self._rest_z(name)))
        mj.mj_forward(m, d)

    def read_state(self) -> JointState:
        """Measured q, dq and actuator torque in config joint order, and simulation time."""
        d, s = self.data, self._state
        np.take(d.qpos, self._qadr, out=s.q)
        np.take(d.qvel, self._vadr, out=s.dq)
        np.take(d.actuator_force, self._act, out=s.tau)
        s.t = d.time
        return s

    def write_command(self, q: np.ndarray, dq: np.ndarray, mode: int) -> None:
        """PD targets: ctrl = q + (kd/kp) dq gives kp(q-q_m) + kd(dq-dq_m); DAMP zeroes kp."""
        if mode == DAMP:
            self._set_damped(True)
            return
        self._set_damped(False)
        self.data.ctrl[self._act] = q + self._ff * dq

    def advance(self, dt: float) -> None:
        """Step the physics for dt seconds (rounded to whole timesteps)."""
        self.step(max(1, round(dt / self.model.opt.timestep)))

    def step(self, n: int = 1) -> None:
        """Step the physics n timesteps."""
        self._mj.mj_step(self.model, self.data, nstep=n)

    def _set_damped(self, damped: bool) -> None:
        if damped == self._damped:
            return
        m = self.model
        m.actuator_gainprm[:, 0] = 0.0 if damped else self._gain0
        m.actuator_biasprm[:, 1] = 0.0 if damped else self._bias1
        self._damped = damped

    # ------------------------------------------------------------------ scene queries

    def site_pos(self, name: str) -> np.ndarray:
        """World position of a site ("left_hand", "right_hand", "cup", "box")."""
        return self.data.site(name).xpos.copy()

    def body_pos(self, name: str) -> np.ndarray:
        """World position of a body's frame."""
        return self.data.body(name).xpos.copy()

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(position, quaternion wxyz) of a free object."""
        a = self._object_qadr[name]
        return self.data.qpos[a : a + 3].copy(), self.data.qpos[a + 3 : a + 7].copy()

    def set_object_pose(self, name: str, pos, quat=(1.0, 0.0, 0.0, 0.0)) -> None:
        """Place a free object (at rest). Call `forward()` before reading positions."""
        if name not in self._object_qadr:
            raise KeyError(f"no free object {name!r} (objects: {sorted(self._object_qadr)})")
        a = self._object_qadr[name]
        self.data.qpos[a : a + 3] = pos
        self.data.qpos[a + 3 : a + 7] = quat
        dof = self.model.jnt_dofadr[
            self._mj.mj_name2id(self.model, self._mj.mjtObj.mjOBJ_JOINT, f"{name}_free")
        ]
        self.data.qvel[dof : dof + 6] = 0.0

    def randomise_objects(
        self, rng: np.random.Generator, spread: float | None = None, min_gap: float | None = None
    ) -> dict[str, np.ndarray]:
        """Move each object up to `spread` m from its nominal place, keeping them `min_gap` apart
        (defaults: the scene file's `table.spread` and `table.min_gap`).

        Yaw is random too. Returns the new positions. Deterministic for a given rng state.
        """
        sc = self.scene
        spread = sc.spread if spread is None else spread
        min_gap = sc.min_gap if min_gap is None else min_gap
        for _ in range(100):
            xy = {o.name: np.array(o.xy) + rng.uniform(-spread, spread, 2) for o in sc.objects}
            names = [n for n in sc.object_names if n in self._object_qadr]
            if all(
                np.linalg.norm(xy[a] - xy[b]) >= min_gap
                for i, a in enumerate(names)
                for b in names[i + 1 :]
            ):
                break
        out = {}
        for name in self._object_qadr:
            yaw = rng.uniform(-np.pi, np.pi)
            quat = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
            pos = np.array([*xy[name], self._rest_z(name)])
            self.set_object_pose(name, pos, quat)
            out[name] = pos
        self.forward()
        return out

    def _rest_z(self, name: str) -> float:
        """Height of an object's centre when it stands on the table (its geom's half height)."""
        m = self.model
        gid = self._mj.mj_name2id(m, self._mj.mjtObj.mjOBJ_GEOM, name)
        half = 1 if m.geom_type[gid] == self._mj.mjtGeom.mjGEOM_CYLINDER else 2
        assert self.scene.table is not None  # objects exist only on a table
        return self.scene.table.top_z + float(m.geom_size[gid][half])

    def forward(self) -> None:
        """Recompute positions (mj_forward) after editing the state by hand."""
        self._mj.mj_forward(self.model, self.data)

    def render(self, camera: str | None = None) -> np.ndarray:
        """Render a config camera (the first when None) from the current state (offline use)."""
        from dualsys.robot.render import CameraRenderer

        if self._renderer is None:
            self._renderer = CameraRenderer(self.model, self.cfg.cameras)
        return self._renderer.render(self.data, camera or self.cfg.cameras[0].name)
