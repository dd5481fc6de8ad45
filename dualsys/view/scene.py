"""The robot's 3D model for Rerun: one static mesh per visual geom of its own model (the
URDF/MJCF that the simulation loads), under the entity of its body, so that logging a body's
world pose moves its meshes. Box geoms (the table) are logged as boxes."""

from __future__ import annotations

import mujoco
import numpy as np

from dualsys.view.poses import RobotPoses

#: Entity of the robot's bodies: ROBOT/<body name>.
ROBOT = "world/robot"
VISUAL_GROUP = 1  # dualsys.robot.model puts visual geoms in group 1


def _rotate(quat_wxyz: np.ndarray, v: np.ndarray) -> np.ndarray:
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat_wxyz)
    return v @ mat.reshape(3, 3).T


def log_model(rr, poses: RobotPoses, recording=None) -> int:
    """Log every visual geom of the robot's bodies as static meshes. Returns geoms logged."""
    m = poses.model
    n = 0
    for body, name in zip(poses.body_ids, poses.names, strict=True):
        for g in range(m.body_geomadr[body], m.body_geomadr[body] + m.body_geomnum[body]):
            if m.geom_group[g] != VISUAL_GROUP:
                continue
            rgba = (np.clip(m.geom_rgba[g], 0, 1) * 255).astype(np.uint8)
            path = f"{ROBOT}/{name}/geom{g}"
            if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
                mid = m.geom_dataid[g]
                v0, nv = m.mesh_vertadr[mid], m.mesh_vertnum[mid]
                f0, nf = m.mesh_faceadr[mid], m.mesh_facenum[mid]
                verts = _rotate(m.geom_quat[g], m.mesh_vert[v0 : v0 + nv]) + m.geom_pos[g]
                entity = rr.Mesh3D(
                    vertex_positions=verts.astype(np.float32),
                    triangle_indices=m.mesh_face[f0 : f0 + nf].astype(np.uint32),
                    albedo_factor=rgba,
                )
            elif m.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX:
                q = m.geom_quat[g]
                entity = rr.Boxes3D(
                    half_sizes=[m.geom_size[g]],
                    centers=[m.geom_pos[g]],
                    quaternions=[rr.Quaternion(xyzw=[q[1], q[2], q[3], q[0]])],
                    colors=[rgba],
                    fill_mode="solid",
                )
            else:
                continue
            rr.log(path, entity, static=True, recording=recording)
            n += 1
    return n


def moving_visible(poses: RobotPoses) -> np.ndarray:
    """Indices into poses.names of the bodies worth a pose per frame: they carry a visual
    geom and hang below a joint (static bodies such as the table are posed once)."""
    m = poses.model
    keep = []
    for i, b in enumerate(poses.body_ids):
        geoms = range(m.body_geomadr[b], m.body_geomadr[b] + m.body_geomnum[b])
        if any(m.geom_group[g] == VISUAL_GROUP for g in geoms):
            keep.append(i)
    return np.array(keep, dtype=int)


def log_pose(rr, poses: RobotPoses, q: np.ndarray, which: np.ndarray, recording=None) -> None:
    """Log the world pose of the bodies `which` (indices into poses.names) for joint vector q
    (config order). About 0.1 ms per body: the caller keeps the rate at the view's."""
    pos, quat = poses.update(q)
    for i in which:
        name, p, r = poses.names[i], pos[i], quat[i]
        rr.log(
            f"{ROBOT}/{name}",
            rr.Transform3D(translation=p, quaternion=rr.Quaternion(xyzw=[r[1], r[2], r[3], r[0]])),
            recording=recording,
        )
