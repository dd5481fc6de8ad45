"""The MuJoCo model of an embodiment: robot description + actuators + tabletop scene + cameras.

`build_model(cfg)` loads the robot description through `mujoco.MjSpec` (URDF from the pinned
`fourier-robot-descriptions` package, or a URDF/MJCF path), adds one position actuator per
config joint (kp, kd from the config's groups; the actuator's bias carries the damping, so
`ctrl = q* + (kd/kp) dq*` gives PD tracking with velocity feed-forward), joint armature and
damping, gravity compensation through the actuators, mimic joints as equality constraints
(MuJoCo's URDF reader turns `<mimic>` into joint equalities), a fixed or floating base, a
table with a red cup and a blue box in front of the robot, and the cameras the config names.

`JointMap` says where every config joint lives in the compiled model (qpos/qvel address,
actuator id). A joint named in the config but absent from the model, or a model joint the
config does not name (mimic joints excepted), fails with `ModelMismatchError` listing both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from dualsys.config import RobotConfig
from dualsys.robot.meshes import simplify_spec_meshes

#: Where each camera name the configs may use is mounted: body, position, camera x/y axes.
#: MuJoCo cameras look along their -z axis; (0,-1,0, s,0,c) looks forward (+x), pitched down
#: by asin(s) relative to the body.
CAMERA_MOUNTS: dict[str, tuple[str, tuple[float, float, float], tuple[float, ...]]] = {
    "head": ("head_yaw_link", (0.12, 0.0, 0.03), (0.0, -1.0, 0.0, 0.565, 0.0, 0.825)),
}

#: Scene objects (free bodies) on the table, and their nominal (x, y) on the table top.
OBJECTS = ("cup", "box")
#: Palm-centre sites of the hands and the links they sit on (`_add_hand_sites`).
HAND_SITES = {"left_hand": "left_end_effector_link", "right_hand": "right_end_effector_link"}
TABLE_TOP_Z = 0.72
TABLE_CENTER = (0.50, 0.0)
TABLE_HALF = (0.25, 0.45, 0.02)
OBJECT_XY = {"cup": (0.38, -0.16), "box": (0.40, 0.16)}
#: Height of the robot base (pelvis) above the floor with the base fixed.
BASE_HEIGHT = 0.95
#: Default mesh simplification grid (m): 684k -> ~150k triangles, 128x128 render ~110 -> ~9 ms.
MESH_CELL = 0.008


class ModelMismatchError(ValueError):
    """The config's joints and the model's joints differ; the message lists both directions."""


@dataclass(frozen=True)
class JointMap:
    """Where each config joint (in config order) lives in the compiled model."""

    names: tuple[str, ...]
    joint_ids: np.ndarray
    qpos_adr: np.ndarray
    qvel_adr: np.ndarray
    actuator_ids: np.ndarray
    mimic: tuple[str, ...]


def description_path(model: str, cfg_dir: Path) -> Path:
    """Resolve `sim.model`: "fourier:<file>" (fourier-robot-descriptions) or a path."""
    if model.startswith("fourier:"):
        import fourier_robot_descriptions

        base = Path(fourier_robot_descriptions.__file__).resolve().parent / "assets" / "urdf"
        path = base / model.split(":", 1)[1]
    else:
        path = (cfg_dir / model).resolve()
    if not path.exists():
        raise FileNotFoundError(f"sim.model {model!r}: file {path} does not exist")
    return path


def _load_spec(path: Path, mesh_cell: float) -> mujoco.MjSpec:
    """Load a URDF (keeping visual meshes, all links) or an MJCF file into an MjSpec.

    URDF meshes are simplified by vertex clustering on a `mesh_cell` grid (0 = as shipped).
    """
    if path.suffix.lower() != ".urdf":
        return mujoco.MjSpec.from_file(str(path))
    text = path.read_text()
    block = (
        f'<mujoco><compiler meshdir="{path.parent}/" strippath="false" '
        'discardvisual="false" fusestatic="false" balanceinertia="true"/></mujoco>'
    )
    text, n = re.subn(r"(<robot\b[^>]*>)", lambda m: m.group(1) + block, text, count=1)
    if n != 1:
        raise ValueError(f"{path}: no <robot> element: not a URDF")
    spec = mujoco.MjSpec.from_string(text)
    if mesh_cell > 0:
        simplify_spec_meshes(spec, path.parent, mesh_cell)
    return spec


def _style_geoms(spec: mujoco.MjSpec) -> None:
    """Visual geoms (no collision) go to group 1, collision geoms to hidden group 3."""
    for g in spec.geoms:
        if g.contype == 0 and g.conaffinity == 0:
            g.group = 1
        else:
            g.group = 3
            g.rgba = [0.5, 0.5, 0.5, 0.0]


def _add_scene(spec: mujoco.MjSpec) -> None:
    """Floor, light, a table and two free objects (red cup, blue box) in front of the robot."""
    w = spec.worldbody
    spec.visual.global_.offwidth = max(spec.visual.global_.offwidth, 640)
    spec.visual.global_.offheight = max(spec.visual.global_.offheight, 480)
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]
    floor = w.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], name="floor")
    floor.rgba = [0.55, 0.6, 0.65, 1]
    floor.group = 0
    light = w.add_light(name="top", pos=[0.5, 0.0, 2.5], dir=[0.0, 0.0, -1.0])
    light.castshadow = False
    tx, ty = TABLE_CENTER
    hx, hy, hz = TABLE_HALF
    table = w.add_body(name="table", pos=[tx, ty, TABLE_TOP_Z - hz])
    top = table.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[hx, hy, hz], name="table_top")
    top.rgba = [0.62, 0.45, 0.3, 1]
    leg_h = (TABLE_TOP_Z - 2 * hz) / 2
    for i, (sx, sy) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1))):
        leg = table.add_geom(
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.02, 0.02, leg_h],
            pos=[sx * (hx - 0.03), sy * (hy - 0.03), -hz - leg_h],
            name=f"table_leg{i}",
        )
        leg.rgba = [0.4, 0.3, 0.2, 1]
    cx, cy = OBJECT_XY["cup"]
    cup = w.add_body(name="cup", pos=[cx, cy, TABLE_TOP_Z + 0.05])
    cup.add_freejoint(name="cup_free")
    g = cup.add_geom(type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.035, 0.05, 0], name="cup")
    g.rgba, g.mass, g.condim = [0.85, 0.1, 0.1, 1], 0.15, 4
    cup.add_site(name="cup", pos=[0, 0, 0])
    bx, by = OBJECT_XY["box"]
    box = w.add_body(name="box", pos=[bx, by, TABLE_TOP_Z + 0.03])
    box.add_freejoint(name="box_free")
    g = box.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.03, 0.03, 0.03], name="box")
    g.rgba, g.mass, g.condim = [0.1, 0.25, 0.85, 1], 0.1, 4
    box.add_site(name="box", pos=[0, 0, 0])


def _add_cameras(spec: mujoco.MjSpec, cfg: RobotConfig) -> None:
    for cam in cfg.cameras:
        if cam.name not in CAMERA_MOUNTS:
            raise ValueError(
                f"{cfg.path}: cameras: no mount known for camera {cam.name!r} "
                f"(known: {sorted(CAMERA_MOUNTS)}); add it to dualsys.robot.model.CAMERA_MOUNTS"
            )
        body_name, pos, xyaxes = CAMERA_MOUNTS[cam.name]
        body = spec.body(body_name)
        if body is None:
            raise ValueError(f"camera {cam.name!r}: body {body_name!r} not in the model")
        x, y = np.array(xyaxes[:3]), np.array(xyaxes[3:])
        x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, np.column_stack([x, y, np.cross(x, y)]).reshape(-1))
        body.add_camera(name=cam.name, pos=list(pos), quat=quat.tolist(), fovy=cam.fovy)


def _add_hand_sites(spec: mujoco.MjSpec) -> None:
    """Sites "left_hand"/"right_hand" 8 cm past the end-effector links (palm centre)."""
    for site, link in HAND_SITES.items():
        body = spec.body(link)
        if body is not None:
            body.add_site(name=site, pos=[0, 0, -0.08])


def check_joints(cfg: RobotConfig, model_joints: list[str], mimic: set[str]) -> None:
    """Raise ModelMismatchError unless config joints == model joints minus mimic joints."""
    want = set(cfg.joint_names)
    have = set(model_joints) - mimic
    missing, extra = sorted(want - have), sorted(have - want)
    if missing or extra:
        lines = [f"{cfg.path}: joints do not match the model {cfg.sim.model!r}:"]
        if missing:
            lines.append(f"  in the config but not in the model ({len(missing)}): {missing}")
        if extra:
            lines.append(f"  in the model but not in the config ({len(extra)}): {extra}")
        raise ModelMismatchError("\n".join(lines))


def build_spec(cfg: RobotConfig, mesh_cell: float = MESH_CELL) -> tuple[mujoco.MjSpec, set[str]]:
    """The model spec (not compiled) and the names of its mimic joints."""
    spec = _load_spec(description_path(cfg.sim.model, cfg.path.parent), mesh_cell)
    spec.option.timestep = cfg.sim.timestep
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    mimic = {
        e.name1
        for e in spec.equalities
        if e.type == mujoco.mjtEq.mjEQ_JOINT and e.name1 and e.name2
    }
    model_joints = [j.name for j in spec.joints if j.type != mujoco.mjtJoint.mjJNT_FREE]
    check_joints(cfg, model_joints, mimic)
    group_of = {j.name: cfg.groups[j.group] for j in cfg.joints}
    for j in spec.joints:
        group = group_of.get(j.name)
        if group is None:  # a mimic joint: dynamics of its side's hand group
            leader = next(e.name2 for e in spec.equalities if e.name1 == j.name)
            group = group_of[leader]
        j.armature = group.armature
        j.damping = [group.damping, 0.0, 0.0]
        j.actgravcomp = True
    for b in spec.bodies:
        if b.name != "world":
            b.gravcomp = 1.0
    for joint in cfg.joints:
        group = cfg.groups[joint.group]
        a = spec.add_actuator(name=joint.name, target=joint.name)
        a.trntype = mujoco.mjtTrn.mjTRN_JOINT
        a.set_to_position(kp=group.kp, kv=group.kd)
        a.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE
        a.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        a.forcerange = [-joint.effort, joint.effort]
    base = spec.worldbody.first_body()
    base.pos = [0.0, 0.0, BASE_HEIGHT]
    if not cfg.sim.fixed_base:
        base.add_freejoint(name="base_free")
    _style_geoms(spec)
    _add_hand_sites(spec)
    if cfg.sim.scene == "table":
        _add_scene(spec)
    elif cfg.sim.scene != "none":
        raise ValueError(
            f"{cfg.path}: sim.scene: expected 'table' or 'none', got {cfg.sim.scene!r}"
        )
    _add_cameras(spec, cfg)
    return spec, mimic


def build_model(cfg: RobotConfig, mesh_cell: float = MESH_CELL) -> tuple[mujoco.MjModel, JointMap]:
    """Compile the embodiment's model and map the config's joints into it.

    mesh_cell: grid (m) of the visual mesh simplification; 0 keeps the meshes as shipped.
    """
    spec, mimic = build_spec(cfg, mesh_cell)
    model = spec.compile()
    ids = np.array(
        [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in cfg.joint_names]
    )
    act = np.array(
        [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in cfg.joint_names]
    )
    jmap = JointMap(
        names=cfg.joint_names,
        joint_ids=ids,
        qpos_adr=model.jnt_qposadr[ids].copy(),
        qvel_adr=model.jnt_dofadr[ids].copy(),
        actuator_ids=act,
        mimic=tuple(sorted(mimic)),
    )
    return model, jmap
