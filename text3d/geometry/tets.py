"""The tetrahedral grid and marching tetrahedra: the surface of a signed field sampled on tet-grid vertices.

Shared by the DMTet representation (a learned SDF on the grid) and by the isosurface export of a density field.

- **Sign**: the field is *positive inside* and negative outside, like ``density - threshold``.
- **Grid**: built in code (no binary grid files shipped). ``resolution`` follows the naming of nvdiffrec's and
  threestudio's grids: the cube ``[-1, 1]^3`` is cut into ``resolution / 2`` cubes per axis and each cube
  into 6 tetrahedra around its main diagonal (the Kuhn/Freudenthal split, which conforms across neighbouring
  cubes). ``resolution=128`` gives 65^3 = 274,625 vertices and 1,572,864 tets, about the size of threestudio's
  ``128_tets.npz``. Grids are cached under ``$TEXT3D_CACHE_DIR`` or ``~/.cache/text3d`` (written atomically).
  Every tet is stored with positive orientation, so one triangle table orients all faces outward.
- **Marching tets**: one vertex per grid edge whose field changes sign, at the linear zero crossing;
  differentiable w.r.t. the field values and the positions. Faces are counter-clockwise seen from outside.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from text3d.geometry.mesh import TriMesh
from text3d.io import atomic_path

log = logging.getLogger(__name__)

_GRID_VERSION = "1"
_TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


# ------------------------------------------------------------------------------------------------------ tet grid
def cache_dir(override: str | os.PathLike = "") -> Path:
    if override:
        return Path(override)
    env = os.environ.get("TEXT3D_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "text3d"


def build_tet_grid(resolution: int) -> tuple[Float[Tensor, "V 3"], Int[Tensor, "T 4"]]:
    """Vertices in ``[-1, 1]^3`` and positively oriented tets (see the module docstring for ``resolution``)."""
    if resolution % 2 or not 4 <= resolution <= 512:
        raise ValueError(f"tet grid resolution must be even and in [4, 512], got {resolution}")
    n = resolution // 2  # cubes per axis
    axis = torch.arange(n + 1)
    ijk = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    verts = ijk.float() * (2.0 / n) - 1.0

    def vid(offset: Tensor) -> Tensor:  # index of corner ``offset`` of every cube
        c = (
            torch.stack(torch.meshgrid(*(torch.arange(n),) * 3, indexing="ij"), dim=-1).reshape(-1, 3)
            + offset
        )
        return (c[:, 0] * (n + 1) + c[:, 1]) * (n + 1) + c[:, 2]

    tets = []
    for perm in itertools.permutations(range(3)):
        path = [torch.zeros(3, dtype=torch.long)]
        for axis_id in perm:  # walk 000 -> 111 along the axes in this order: one tet per walk
            step = path[-1].clone()
            step[axis_id] = 1
            path.append(step)
        corners = torch.stack(path).float()
        e = corners[1:] - corners[0]
        if torch.linalg.det(e) < 0:
            path[2], path[3] = path[3], path[2]
        tets.append(torch.stack([vid(p) for p in path], dim=1))
    return verts, torch.cat(tets, dim=0)


def load_tet_grid(
    resolution: int, directory: str | os.PathLike = ""
) -> tuple[Float[Tensor, "V 3"], Int[Tensor, "T 4"]]:
    """The grid of :func:`build_tet_grid`, from the disk cache when present (built and cached otherwise)."""
    from safetensors.torch import load_file, save_file

    path = cache_dir(directory) / f"tets-{resolution}-v{_GRID_VERSION}.safetensors"
    if path.is_file():
        try:
            data = load_file(str(path))
            return data["vertices"], data["tets"].long()
        except Exception as err:  # a damaged cache file is rebuilt, never fatal
            log.warning("rebuilding the tet grid cache %s (%s)", path, err)
    verts, tets = build_tet_grid(resolution)
    try:
        with atomic_path(path) as tmp:
            save_file({"vertices": verts.contiguous(), "tets": tets.int().contiguous()}, str(tmp))
    except OSError as err:  # read-only home, full disk: the grid still works, just is not cached
        log.warning("could not cache the tet grid at %s (%s)", path, err)
    return verts, tets


# ------------------------------------------------------------------------------------------------ marching tets
def _triangle_table() -> tuple[Tensor, Tensor]:
    """``table [16, 2, 3]`` (tet-edge indices, -1 = unused) and ``count [16]`` for each inside-vertex bitmask.

    Derived from the geometry of a positively oriented reference tet, so the faces come out counter-clockwise seen
    from outside (the side with negative SDF) for every positively oriented tet.
    """
    ref = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    table = -np.ones((16, 2, 3), dtype=np.int64)
    count = np.zeros(16, dtype=np.int64)
    for case in range(16):
        inside = [(case >> i) & 1 for i in range(4)]
        if sum(inside) in (0, 4):
            continue
        cross = [k for k, (a, b) in enumerate(_TET_EDGES) if inside[a] != inside[b]]
        pts = np.array([(ref[_TET_EDGES[k][0]] + ref[_TET_EDGES[k][1]]) / 2 for k in cross])
        out_dir = ref[[i for i in range(4) if not inside[i]]].mean(0) - ref[
            [i for i in range(4) if inside[i]]
        ].mean(0)
        centre = pts.mean(0)
        # Order the crossing points counter-clockwise around out_dir.
        u = pts[0] - centre
        u -= out_dir * (u @ out_dir) / (out_dir @ out_dir)
        v = np.cross(out_dir, u)
        ang = [np.arctan2((p - centre) @ v, (p - centre) @ u) for p in pts]
        ordered = [cross[i] for i in np.argsort(ang)]
        tris = [ordered[:3]] if len(ordered) == 3 else [ordered[:3], [ordered[0], ordered[2], ordered[3]]]
        for j, t in enumerate(tris):
            table[case, j] = t
        count[case] = len(tris)
    return torch.from_numpy(table), torch.from_numpy(count)


_TABLE, _COUNT = _triangle_table()


def marching_tets(pos: Float[Tensor, "V 3"], sdf: Float[Tensor, "V"], tets: Int[Tensor, "T 4"]) -> TriMesh:
    """Extract the zero level set of ``sdf`` (positive inside) as a triangle mesh.

    Differentiable w.r.t. ``pos`` and ``sdf`` through the edge crossings ``p = a + sa / (sa - sb) * (b - a)``.
    Only tets whose vertices disagree in sign are processed after the first vectorised test, so the cost is
    dominated by one gather over the grid.
    """
    dev = pos.device
    with torch.no_grad():
        inside = sdf > 0
        occ = inside[tets]  # [T, 4]
        n_in = occ.sum(-1)
        surf = (n_in > 0) & (n_in < 4)
        tv = tets[surf]  # [S, 4]
        if tv.shape[0] == 0:
            return TriMesh(pos.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=dev))
        edge_idx = torch.tensor(_TET_EDGES, device=dev)
        ends = tv[:, edge_idx]  # [S, 6, 2]
        lo, hi = ends.amin(-1), ends.amax(-1)
        key = lo * pos.shape[0] + hi
        ukey, inv = torch.unique(key.reshape(-1), return_inverse=True)
        ea, eb = ukey // pos.shape[0], ukey % pos.shape[0]
        crossing = inside[ea] != inside[eb]
        vert_of_edge = torch.full_like(ukey, -1)
        vert_of_edge[crossing] = torch.arange(int(crossing.sum()), device=dev)
        tet_verts = vert_of_edge[inv].reshape(-1, 6)  # [S, 6], -1 where the edge does not cross
        case = (occ[surf].long() * torch.tensor([1, 2, 4, 8], device=dev)).sum(-1)
        table, count = _TABLE.to(dev)[case], _COUNT.to(dev)[case]  # [S, 2, 3], [S]
        first = tet_verts.gather(1, table[:, 0])  # [S, 3]
        second = tet_verts[count == 2].gather(1, table[count == 2, 1])
        faces = torch.cat([first, second], dim=0)
        a, b = ea[crossing], eb[crossing]
    sa, sb = sdf[a], sdf[b]
    t = (sa / (sa - sb))[:, None]
    verts = pos[a] + t * (pos[b] - pos[a])
    return TriMesh(verts, faces)
