"""Mesh extraction and clean-up for export: isosurface of the coarse density, component filtering, decimation,
and the placement into the exported frame (centred, metres).

**Isosurface threshold.** A NeRF has no surface, only a density; users of the anchors complain that exported meshes
do not match the renders because a fixed threshold (threestudio's 25) ignores how the renderer turns density into
opacity. :func:`auto_threshold` picks the density level whose isosurface agrees best with what the renders show: it
casts the volume renderer's own rays and samples from several views, computes the rendered opacity of every ray
and its peak density, and chooses the level ``tau`` that maximises the intersection-over-union of the silhouette
``{peak density > tau}`` (what the surface at ``tau`` covers) with ``{opacity > 0.5}`` (what the renders show).
The sweep over ``tau`` is exact: one sort of the rays by peak density.

**Frame.** text3d's world frame *is* glTF's (+Y up, the azimuth-0 view looks from +Z; see :mod:`text3d.cameras`),
so the only placement is a uniform scale and a translation (:func:`placement`): no rotation, the front already
faces +Z.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from text3d.cameras import Cameras
from text3d.errors import ExportError

log = logging.getLogger(__name__)

DensityFn = Callable[[Tensor], Tensor]
"""``density_fn(points [N, 3]) -> density [N]`` (>= 0), e.g. :meth:`text3d.fields.nerf.NeRFField.density`."""


# ------------------------------------------------------------------------------------------------ the threshold
@dataclass
class ThresholdEstimate:
    """What :func:`auto_threshold` found.

    Attributes:
        threshold: the density level of the isosurface.
        iou: silhouette agreement at that level with the rendered ``opacity > opacity_level`` masks (1 = exact).
        opacity_level: the opacity taken as "the renders show something here".
    """

    threshold: float
    iou: float
    opacity_level: float


@torch.no_grad()
def ray_densities(
    density_fn: DensityFn,
    bound: float,
    cameras: Cameras,
    resolution: int,
    n_samples: int,
    chunk: int = 1 << 18,
) -> tuple[Float[Tensor, "R"], Float[Tensor, "R"]]:
    """Rendered opacity and peak sampled density of every pixel ray (``R = B * res * res``).

    Uses exactly the volume renderer's sampling (midpoints of ``n_samples`` bins between the ray's entry and exit
    of the scene box) and compositing, so the opacity is the one the renders had.
    """
    from text3d.render.volume import composite, sample_rays

    origins, dirs = cameras.rays(resolution, resolution)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    t_all, bins, hit = sample_rays(o, d, bound, n_samples)
    opacity, peak = [], []
    rays_per_chunk = max(1, chunk // n_samples)
    for s in range(0, o.shape[0], rays_per_chunk):
        sl = slice(s, s + rays_per_chunk)
        t = t_all[sl]
        pts = o[sl, None, :] + t[..., None] * d[sl, None, :]
        dens = density_fn(pts.reshape(-1, 3)).float().reshape(-1, n_samples) * hit[sl, None]
        weights = composite(dens, bins[sl, None].expand_as(dens))
        opacity.append(weights.sum(dim=-1))
        peak.append(dens.amax(dim=-1))
    return torch.cat(opacity), torch.cat(peak)


def threshold_from_rays(
    opacity: Float[Tensor, "R"], peak: Float[Tensor, "R"], opacity_level: float = 0.5
) -> ThresholdEstimate:
    """The density level whose silhouette ``{peak > tau}`` best matches ``{opacity > opacity_level}`` (IoU).

    Raises:
        ExportError: no ray reaches ``opacity_level``: the renders are empty, so there is nothing to export.
    """
    target = (opacity > opacity_level).cpu()
    n_target = int(target.sum())
    if n_target == 0:
        raise ExportError(
            f"the renders are empty (peak opacity {float(opacity.max()):.3f} < {opacity_level}), so there is no "
            "surface to export; train longer, or set export.threshold to a density level by hand"
        )
    order = torch.argsort(peak.cpu(), descending=True)
    p = peak.cpu()[order].double()
    inside = target[order].double()
    inter = torch.cumsum(inside, 0)  # |A ∩ B_k| for B_k = the k+1 rays of highest peak
    k = torch.arange(1, p.numel() + 1, dtype=torch.float64)
    iou = inter / (n_target + k - inter)
    # Only cut between distinct peak values: rays with equal peaks are on the same side of any level.
    distinct = torch.ones_like(p, dtype=torch.bool)
    distinct[:-1] = p[:-1] > p[1:]
    iou = torch.where(distinct, iou, torch.full_like(iou, -1.0))
    best = int(torch.argmax(iou))
    hi = float(p[best])
    lo = float(p[best + 1]) if best + 1 < p.numel() else 0.0
    return ThresholdEstimate(threshold=0.5 * (hi + lo), iou=float(iou[best]), opacity_level=opacity_level)


def auto_threshold(
    density_fn: DensityFn,
    bound: float,
    cameras: Cameras,
    resolution: int = 64,
    n_samples: int = 64,
    opacity_level: float = 0.5,
) -> ThresholdEstimate:
    """The isosurface level that reproduces the rendered silhouettes (see the module docstring)."""
    opacity, peak = ray_densities(density_fn, bound, cameras, resolution, n_samples)
    return threshold_from_rays(opacity, peak, opacity_level)


# ---------------------------------------------------------------------------------------------- the isosurface
@torch.no_grad()
def extract_isosurface(
    density_fn: DensityFn,
    bound: float,
    grid_resolution: int,
    threshold: float,
    device: torch.device | str = "cpu",
    chunk: int = 1 << 18,
) -> tuple[Float[np.ndarray, "V 3"], Int[np.ndarray, "F 3"]]:
    """The surface ``density == threshold`` by marching tetrahedra on the shared DMTet grid.

    Args:
        grid_resolution: DMTet's naming (``grid_resolution / 2`` cubes per axis over ``[-bound, bound]^3``).

    Returns:
        ``verts [V, 3]`` float32 and ``faces [F, 3]`` int64, counter-clockwise seen from outside; both empty when
        the density never crosses the threshold.
    """
    from text3d.fields.dmtet import load_tet_grid, marching_tets

    grid, tets = load_tet_grid(grid_resolution)
    pos = grid.to(device) * bound
    dens = torch.cat([density_fn(c).float() for c in pos.split(chunk)])
    mesh = marching_tets(pos, dens - threshold, tets.to(device))
    return mesh.verts.float().cpu().numpy(), mesh.faces.long().cpu().numpy()


# -------------------------------------------------------------------------------------------------- clean-up
def face_areas(verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"]) -> Float[np.ndarray, "F"]:
    tri = verts[faces].astype(np.float64)
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)


def compact(
    verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"]
) -> tuple[Float[np.ndarray, "U 3"], Int[np.ndarray, "F 3"]]:
    """Drop vertices no face uses, renumbering the faces."""
    used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
    return verts[used], inverse.reshape(-1, 3).astype(np.int64)


def clean_mesh(
    verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"], min_component_fraction: float = 0.05
) -> tuple[Float[np.ndarray, "U 3"], Int[np.ndarray, "G 3"]]:
    """Weld duplicate vertices, remove degenerate and duplicate faces, then connected pieces smaller than ``min_component_fraction`` of the
    total surface area (the largest piece is always kept), then unused vertices.

    Floaters are what a NeRF leaves in empty space and what xatlas chokes on; an asset made of several sizeable
    parts (a cup on a saucer) keeps all of them.

    Raises:
        ExportError: nothing is left.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    verts = np.asarray(verts, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if faces.shape[0] == 0:
        raise ExportError("the mesh is empty: there is no surface to export")
    # Weld exact duplicates, so a triangle soup is one piece and not thousands of "floaters".
    verts, weld = np.unique(verts, axis=0, return_inverse=True)
    faces = weld.reshape(-1)[faces]
    ok = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    ok &= np.isfinite(verts[faces]).all(axis=(1, 2))
    faces = faces[ok]
    area = face_areas(verts, faces)
    scale = float(np.ptp(verts[faces.reshape(-1)], axis=0).max()) if faces.size else 0.0
    keep = area > 1e-12 * max(scale, 1e-12) ** 2
    faces, area = faces[keep], area[keep]
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    first.sort()
    faces, area = faces[first], area[first]
    if faces.shape[0] == 0:
        raise ExportError("every face of the mesh is degenerate: there is no surface to export")
    n = verts.shape[0]
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_matrix((np.ones(rows.shape[0], dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_label = labels[faces[:, 0]]
    comp_area = np.bincount(face_label, weights=area)
    kept = comp_area >= min_component_fraction * comp_area.sum()
    kept[np.argmax(comp_area)] = True
    dropped = int((~kept[np.unique(face_label)]).sum())
    if dropped:
        log.info("dropped %d small disconnected piece(s) of the mesh", dropped)
    faces = faces[kept[face_label]]
    return compact(verts, faces)


def orient_outward(verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"]) -> Int[np.ndarray, "F 3"]:
    """Flip all faces if the signed volume is negative (inside-out mesh), so normals point outward."""
    tri = verts[faces].astype(np.float64)
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    return faces[:, ::-1].copy() if signed < 0 else faces


def decimate(
    verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"], target_faces: int
) -> tuple[Float[np.ndarray, "U 3"], Int[np.ndarray, "G 3"]]:
    """Quadric edge-collapse decimation (``fast_simplification``) to about ``target_faces``; no-op below it."""
    if target_faces <= 0 or faces.shape[0] <= target_faces:
        return verts, faces
    import fast_simplification

    v, f = fast_simplification.simplify(
        np.ascontiguousarray(verts, dtype=np.float32),
        np.ascontiguousarray(faces, dtype=np.int64),
        target_count=int(target_faces),
    )
    return compact(np.asarray(v, dtype=np.float32), np.asarray(f, dtype=np.int64))


def vertex_normals(
    verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"]
) -> Float[np.ndarray, "V 3"]:
    """Area-weighted unit vertex normals (:func:`text3d.fields.mesh_ops.vertex_normals`, in float64); vertices
    whose faces cancel out get +Y (never a zero vector, which glTF forbids)."""
    from text3d.fields.mesh_ops import vertex_normals as torch_vertex_normals

    n = torch_vertex_normals(torch.from_numpy(np.asarray(verts, np.float64)), torch.from_numpy(faces).long())
    n = n.numpy()
    zero = np.linalg.norm(n, axis=-1) < 0.5
    n[zero] = (0.0, 1.0, 0.0)
    return n.astype(np.float32)


# ------------------------------------------------------------------------------------------------- placement
@dataclass(frozen=True)
class Placement:
    """``exported = (field_position - offset) * scale``: the map from the field's frame to the file's."""

    scale: float
    offset: tuple[float, float, float]

    def apply(self, verts: Float[np.ndarray, "V 3"]) -> Float[np.ndarray, "V 3"]:
        return ((verts - np.asarray(self.offset, dtype=np.float64)) * self.scale).astype(np.float32)

    def invert(self, verts: Float[np.ndarray, "V 3"]) -> Float[np.ndarray, "V 3"]:
        return (verts / self.scale + np.asarray(self.offset, dtype=np.float64)).astype(np.float32)


PLACEMENTS = ("center", "ground", "none")


def placement(verts: Float[np.ndarray, "V 3"], size: float, center: str = "center") -> Placement:
    """Scale so the largest bounding-box side is ``size`` metres (``size <= 0``: keep field units), and translate.

    Args:
        center: ``"center"``: the bounding-box centre goes to the origin; ``"ground"``: centred in X and Z with
            the lowest point at Y = 0 (stands on the floor in a game engine); ``"none"``: no translation.
    """
    if center not in PLACEMENTS:
        raise ExportError(f"export.center must be one of {', '.join(PLACEMENTS)}, got {center!r}")
    lo, hi = verts.min(axis=0).astype(np.float64), verts.max(axis=0).astype(np.float64)
    extent = float((hi - lo).max())
    scale = size / extent if size > 0 and extent > 0 else 1.0
    mid = 0.5 * (lo + hi)
    if center == "center":
        offset = mid
    elif center == "ground":
        offset = np.array([mid[0], lo[1], mid[2]])
    else:
        offset = np.zeros(3)
    return Placement(scale=scale, offset=tuple(float(x) for x in offset))
