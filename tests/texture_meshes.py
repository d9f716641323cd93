"""Meshes with known UVs for the texture tests and bench: a bumpy lat-long sphere (positions shared across the
``u`` seam, UVs not: an OBJ with separate ``v`` / ``vt`` indices) and its writers (OBJ, GLB, PLY)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch


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
    lines = [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in pos]
    lines += [f"vt {u:.9g} {v:.9g}" for u, v in uv]
    lines += [
        f"f {a[0]}/{b[0]} {a[1]}/{b[1]} {a[2]}/{b[2]}" for a, b in zip(faces + 1, face_uvs + 1, strict=True)
    ]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def write_glb(
    path: Path, pos: np.ndarray, faces: np.ndarray, uv: np.ndarray, face_uvs: np.ndarray, parts: int = 2
):
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
        scene.add_geometry(
            m, node_name=f"part{k}", transform=trimesh.transformations.translation_matrix(shift)
        )
    scene.export(str(path))
    return Path(path)


def emission_scene(size: int = 128, n_train: int = 24, n_test: int = 8, samples: int = 64):
    """Render (or reuse from the cache) the emission-textured bumpy sphere; returns (dataset, true texture)."""
    from text3d.scenes import (
        CameraRigSpec,
        MaterialSpec,
        MeshSpec,
        RenderSpec,
        SceneSpec,
        TextureSpec,
        WorldSpec,
        render_dataset,
    )
    from text3d.scenes.spec import noise_texture

    folder = Path(tempfile.gettempdir()) / "text3d-texture-bench"
    folder.mkdir(exist_ok=True)
    obj = write_obj(folder / "bumpy_sphere.obj", *bumpy_sphere())
    tex = TextureSpec(kind="noise", size=256, seed=3)
    spec = SceneSpec(
        mesh=MeshSpec(source=str(obj), size=0.0),
        material=MaterialSpec(kind="emission", texture=tex),
        world=WorldSpec(kind="color", color=(0.0, 0.0, 0.0)),
        cameras=CameraRigSpec(n_train=n_train, n_test=n_test, distance=3.0, fov_deg=40.0),
        render=RenderSpec(width=size, height=size, samples=samples),
    )
    return render_dataset(spec), obj, noise_texture(tex)


@torch.no_grad()
def covered_texels(stage, size: int) -> np.ndarray:
    """Texels (row 0 = v 1) inside the bilinear footprint of some visible pixel of a training view."""
    from text3d.render import raster

    rep, views = stage.representation, stage.views
    hit = np.zeros((size, size), dtype=bool)
    cams = views.cameras()
    h, w = views.photos.height, views.photos.width
    for i in range(len(cams)):
        cam = cams[i : i + 1]
        homo = torch.cat([rep.verts, torch.ones_like(rep.verts[:, :1])], dim=-1)
        clip = homo @ cam.mvp(aspect=w / h).transpose(-1, -2)
        rast = raster.rasterize(clip, rep.faces, (h, w))
        uv = raster.interpolate(rep.corner_uvs, rast, rep.corner_faces)[0][rast.mask[0, ..., 0] > 0].numpy()
        x = uv[:, 0] * size - 0.5
        y = (1.0 - uv[:, 1]) * size - 0.5
        for dx in (0, 1):
            for dy in (0, 1):
                xi = np.clip(np.floor(x).astype(int) + dx, 0, size - 1)
                yi = np.clip(np.floor(y).astype(int) + dy, 0, size - 1)
                hit[yi, xi] = True
    return hit
