"""Surfaces of density fields: the isosurface at a level, and the level that matches the rendered silhouettes.

**Isosurface threshold.** A NeRF has no surface, only a density; users of the anchors complain that exported meshes
do not match the renders because a fixed threshold (threestudio's 25) ignores how the renderer turns density into
opacity. :func:`auto_threshold` picks the density level whose isosurface agrees best with what the renders show: it
casts the volume renderer's own rays and samples from several views, computes the rendered opacity of every ray
and its peak density, and chooses the level ``tau`` that maximises the intersection-over-union of the silhouette
``{peak density > tau}`` (what the surface at ``tau`` covers) with ``{opacity > 0.5}`` (what the renders show).
The sweep over ``tau`` is exact: one sort of the rays by peak density.

Used by training (the refine stage's initial SDF) and by export (the mesh of a NeRF-only run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from text3d.cameras import Cameras
from text3d.devices import query_chunk
from text3d.errors import ExportError
from text3d.geometry.asset import DensityFn
from text3d.geometry.rays import composite, sample_rays
from text3d.geometry.tets import load_tet_grid, marching_tets

log = logging.getLogger(__name__)


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
    chunk: int | None = None,
) -> tuple[Float[Tensor, "R"], Float[Tensor, "R"]]:
    """Rendered opacity and peak sampled density of every pixel ray (``R = B * res * res``).

    Uses exactly the volume renderer's sampling (midpoints of ``n_samples`` bins between the ray's entry and exit
    of the scene box) and compositing, so the opacity is the one the renders had.
    """
    origins, dirs = cameras.rays(resolution, resolution)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    t_all, bins, hit = sample_rays(o, d, bound, n_samples)
    opacity, peak = [], []
    rays_per_chunk = max(1, (chunk or query_chunk(o.device)) // n_samples)
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
    chunk: int | None = None,
) -> tuple[Float[np.ndarray, "V 3"], Int[np.ndarray, "F 3"]]:
    """The surface ``density == threshold`` by marching tetrahedra on the shared DMTet grid.

    Args:
        grid_resolution: DMTet's naming (``grid_resolution / 2`` cubes per axis over ``[-bound, bound]^3``).

    Returns:
        ``verts [V, 3]`` float32 and ``faces [F, 3]`` int64, counter-clockwise seen from outside; both empty when
        the density never crosses the threshold.
    """
    grid, tets = load_tet_grid(grid_resolution)
    pos = grid.to(device) * bound
    dens = torch.cat([density_fn(c).float() for c in pos.split(chunk or query_chunk(pos.device))])
    mesh = marching_tets(pos, dens - threshold, tets.to(device))
    return mesh.verts.float().cpu().numpy(), mesh.faces.long().cpu().numpy()


def occupancy_masked(density_fn: DensityFn, occupancy) -> DensityFn:
    """``density_fn`` evaluated only in occupied cells of the stage's occupancy grid, 0 elsewhere.

    This is what the volume renderer does, so the ``auto`` threshold sees exactly the rendered opacity, and the
    grid skips most of the scene box (the occupancy cut-off is far below any surface level).
    """
    if occupancy is None:
        return density_fn

    def masked(x: torch.Tensor) -> torch.Tensor:
        keep = occupancy.query(x)
        out = x.new_zeros(x.shape[0])
        if bool(keep.any()):
            out[keep] = density_fn(x[keep]).to(out.dtype)
        return out

    return masked
