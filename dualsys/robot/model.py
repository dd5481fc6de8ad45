"""The MuJoCo model of an embodiment: robot description + actuators + tabletop scene + cameras.

`build_model(cfg)` loads the robot description through `mujoco.MjSpec` (URDF from the pinned
`fourier-robot-descriptions` package, or a URDF/MJCF path), adds one position actuator per
config joint (kp, kd from the config's groups; the actuator's bias carries the damping, so
`ctrl = q* + (kd/kp) dq*` gives PD tracking with velocity feed-forward), joint armature and
damping, gravity compensation through the actuators, mimic joints as equality constraints
(MuJoCo's URDF reader turns `<mimic>` into joint equalities), a fixed or floating base, a
the scene of the robot's scene file (`dualsys.scene`: table and objects, palm sites, the base
height) and the cameras the config names, on the mounts the scene file gives.

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

from dualsys.config import ConfigError, RobotConfig
from dualsys.robot.meshes import simplify_spec_meshes
from dualsys.scene import Scene, scene_of

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


def _add_world(spec: mujoco.MjSpec) -> None:
    """Floor, light and render buffer sizes (every scene has them)."""
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


def _add_table(spec: mujoco.MjSpec, scene: Scene) -> None:
    """The scene's table and its free objects (body, geom and site named after the object,
    free joint `<name>_free`), each standing on the table top at its nominal (x, y)."""
    w, t = spec.worldbody, scene.table
    assert t is not None
    tx, ty = t.center
    hx, hy, hz = t.half_size
    table = w.add_body(name="table", pos=[tx, ty, t.top_z - hz])
    top = table.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[hx, hy, hz], name="table_top")
    top.rgba = [0.62, 0.45, 0.3, 1]
    leg_h = (t.top_z - 2 * hz) / 2
    for i, (sx, sy) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1))):
        leg = table.add_geom(
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.02, 0.02, leg_h],
            pos=[sx * (hx - 0.03), sy * (hy - 0.03), -hz - leg_h],
            name=f"table_leg{i}",
        )
        leg.rgba = [0.4, 0.3, 0.2, 1]
    shapes = {"cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER, "box": mujoco.mjtGeom.mjGEOM_BOX}
    for o in scene.objects:
        x, y = o.xy
        body = w.add_body(name=o.name, pos=[x, y, t.top_z + o.half_height])
        body.add_freejoint(name=f"{o.name}_free")
        size = [*o.size, 0.0][:3]
        g = body.add_geom(type=shapes[o.shape], size=size, name=o.name)
        g.rgba, g.mass, g.condim = list(o.rgba), o.mass, 4
        body.add_site(name=o.name, pos=[0, 0, 0])


def _add_cameras(spec: mujoco.MjSpec, cfg: RobotConfig, scene: Scene) -> None:
    for cam in cfg.cameras:
        if cam.name not in scene.cameras:
            raise ConfigError(
                scene.path or cfg.path,
                f"cameras.{cam.name}",
                f"no mount for camera {cam.name!r} of {cfg.path} (mounts: "
                f"{sorted(scene.cameras)}); add [cameras.{cam.name}] to the scene file",
            )
        mount = scene.cameras[cam.name]
        body = spec.body(mount.body)
        if body is None:
            raise ConfigError(
                scene.path or cfg.path,
                f"cameras.{cam.name}.body",
                f"{mount.body!r} not in the model",
            )
        x, y = np.array(mount.xyaxes[:3]), np.array(mount.xyaxes[3:])
        x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, np.column_stack([x, y, np.cross(x, y)]).reshape(-1))
        body.add_camera(name=cam.name, pos=list(mount.pos), quat=quat.tolist(), fovy=cam.fovy)


def _add_hand_sites(spec: mujoco.MjSpec, scene: Scene) -> None:
    """The scene file's palm-centre sites, on their links (a link the model lacks: skipped)."""
    for site, hand in scene.hand_sites.items():
        body = spec.body(hand.link)
        if body is not None:
            body.add_site(name=site, pos=list(hand.offset))


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
    scene = scene_of(cfg)
    base = spec.worldbody.first_body()
    base.pos = [0.0, 0.0, scene.base_height]
    if not cfg.sim.fixed_base:
        base.add_freejoint(name="base_free")
    _style_geoms(spec)
    _add_hand_sites(spec, scene)
    _add_world(spec)
    if scene.table is not None:
        _add_table(spec, scene)
    _add_cameras(spec, cfg, scene)
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
