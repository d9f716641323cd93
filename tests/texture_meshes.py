"""Meshes with known UVs for the texture tests and bench: a bumpy lat-long sphere (positions shared across the
``u`` seam, UVs not: an OBJ with separate ``v`` / ``vt`` indices) and its writers (OBJ, GLB, PLY)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def bumpy_sphere(n_lat: int = 24, n_lon: int = 48, radius: float = 0.8, bump: float = 0.08):
    """``(positions [V, 3], faces [F, 3], uvs [T, 2], face_uvs [F, 3])``; poles are single vertices, the seam at
    ``u = 0 / 1`` shares positions but not UVs. Y up, front +Z; UVs OpenGL (``v = 1`` at the north pole)."""
    lat = np.linspace(0.0, np.pi, n_lat + 1)
    lon = np.linspace(0.0, 2.0 * np.pi, n_lon + 1)
    pos: list[list[float]] = []
    idx: dict[tuple[int, int], int] = {}
    for i, th in enumerate(lat):
        for j, ph in enumerate(lon[:-1]):
            if i in (0, n_lat) and j > 0:
                idx[(i, j)] = idx[(i, 0)]
                continue
            r = radius * (1.0 + bump * np.sin(3.0 * th) * np.cos(4.0 * ph))
            idx[(i, j)] = len(pos)
            pos.append([r * np.sin(th) * np.sin(ph), r * np.cos(th), r * np.sin(th) * np.cos(ph)])
        idx[(i, n_lon)] = idx[(i, 0)]
    uv = np.array([[j / n_lon, 1.0 - i / n_lat] for i in range(n_lat + 1) for j in range(n_lon + 1)])

    def t(i: int, j: int) -> int:
        return i * (n_lon + 1) + j

    faces, face_uvs = [], []
    for i in range(n_lat):
        for j in range(n_lon):
            a, b, c, d = (i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)
            for tri in ((a, b, c), (a, c, d)):
                vs = [idx[k] for k in tri]
                if len(set(vs)) == 3:
                    faces.append(vs)
                    face_uvs.append([t(*k) for k in tri])
    return np.array(pos), np.array(faces), uv, np.array(face_uvs)


def write_obj(path: Path, pos: np.ndarray, faces: np.ndarray, uv: np.ndarray, face_uvs: np.ndarray) -> Path:
    lines = ["v %.9g %.9g %.9g" % tuple(p) for p in pos]
    lines += ["vt %.9g %.9g" % tuple(u) for u in uv]
    lines += [
        "f %d/%d %d/%d %d/%d" % (a[0], b[0], a[1], b[1], a[2], b[2]) for a, b in zip(faces + 1, face_uvs + 1)
    ]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def write_glb(path: Path, pos: np.ndarray, faces: np.ndarray, uv: np.ndarray, face_uvs: np.ndarray, parts: int = 2):
    """A GLB scene of ``parts`` meshes (the faces split in order), each under a node with its own translation,
    with the vertices moved back by it: the merged scene is the same surface. Seams are split (glTF style)."""
    import trimesh

    key = faces * len(uv) + face_uvs
    uniq, inverse = np.unique(key.reshape(-1), return_inverse=True)
    v, t = uniq // len(uv), uniq % len(uv)
    positions, uvs, tri = pos[v], uv[t], inverse.reshape(-1, 3)
    scene = trimesh.Scene()
    for k, sel in enumerate(np.array_split(np.arange(len(tri)), parts)):
        used, local = np.unique(tri[sel], return_inverse=True)
        shift = np.array([0.1 * (k + 1), -0.2 * k, 0.05])
        m = trimesh.Trimesh(positions[used] - shift, local.reshape(-1, 3), process=False)
        m.visual = trimesh.visual.TextureVisuals(uv=uvs[used])
        scene.add_geometry(m, node_name=f"part{k}", transform=trimesh.transformations.translation_matrix(shift))
    scene.export(str(path))
    return Path(path)
