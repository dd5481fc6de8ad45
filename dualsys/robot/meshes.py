"""Mesh simplification for the simulation's cameras: binary STL reading + vertex clustering.

The GR-1 description ships 684k triangles; software rendering (llvmpipe) spends ~110 ms per
128x128 frame on them, which System 2's core cannot afford. Vertex clustering (snap vertices to
a grid, merge each cell, drop collapsed triangles) keeps the silhouette and cuts the count by
~10-20x in a few milliseconds per mesh, with numpy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_STL_DTYPE = np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])


def read_stl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (3m,3) float64 and faces (m,3) int32 of a binary STL, as a triangle soup."""
    data = path.read_bytes()
    if len(data) < 84:
        raise ValueError(f"{path}: too short to be a binary STL")
    n = int(np.frombuffer(data, "<u4", 1, 80)[0])
    if len(data) != 84 + 50 * n:
        raise ValueError(f"{path}: not a binary STL ({len(data)} bytes for {n} triangles)")
    verts = np.frombuffer(data, _STL_DTYPE, n, 84)["v"].reshape(-1, 3).astype(np.float64)
    return verts, np.arange(3 * n, dtype=np.int32).reshape(-1, 3)


def cluster(verts: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering on a grid of `cell` metres; returns the simplified (verts, faces)."""
    if cell <= 0 or len(faces) == 0:
        return verts, faces
    cells = np.floor(verts / cell).astype(np.int64)
    cells -= cells.min(axis=0)
    span = cells.max(axis=0) + 1
    keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    new_verts = np.zeros((len(counts), 3))
    np.add.at(new_verts, inverse, verts)
    new_verts /= counts[:, None]
    f = inverse[faces]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    f = f[keep]
    if len(f) < 4:  # the mesh is smaller than the grid: keep the original
        return verts, faces
    fs = np.sort(f, axis=1).astype(np.int64)
    n = int(fs.max()) + 1
    _, first = np.unique((fs[:, 0] * n + fs[:, 1]) * n + fs[:, 2], return_index=True)
    f = f[np.sort(first)]
    used, remap = np.unique(f, return_inverse=True)
    return new_verts[used], remap.reshape(-1, 3).astype(np.int32)


def simplify_spec_meshes(spec, base_dir: Path, cell: float) -> tuple[int, int]:
    """Replace every file-based STL mesh of an MjSpec by its clustered version, in place.

    Returns (triangles before, triangles after).
    """
    before = after = 0
    for mesh in spec.meshes:
        if not mesh.file or not mesh.file.lower().endswith(".stl"):
            continue
        path = Path(mesh.file)
        if not path.is_absolute():
            path = (base_dir / path).resolve()
        verts, faces = read_stl(path)
        before += len(faces)
        verts, faces = cluster(verts, faces, cell)
        after += len(faces)
        mesh.file = ""
        mesh.uservert = verts.astype(np.float32).reshape(-1).tolist()
        mesh.userface = faces.reshape(-1).tolist()
    return before, after
