"""DMTet: a signed distance and a bounded deformation on a tetrahedral grid, turned into a mesh by marching tets.

The refine stage's geometry (Magic3D, after nvdiffrec's DMTet). Conventions:

- **Sign**: the SDF is *positive inside* and negative outside, like ``density - threshold``, which is how the
  coarse NeRF initialises it.
- **Grid**: :mod:`text3d.geometry.tets` (``resolution / 2`` cubes per axis over ``[-bound, bound]^3``, 6 tets
  each, cached on disk).
- **Deformation**: each grid vertex moves by ``deform_scale * cell * tanh(raw)``, at most ``deform_scale`` of a
  cell edge, so tets cannot fold over while the surface can still slide off the lattice.
- **Marching tets** (:func:`text3d.geometry.tets.marching_tets`): differentiable w.r.t. the SDF and the
  (deformed) positions. Faces are counter-clockwise seen from outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from text3d.geometry.mesh import TriMesh
from text3d.geometry.tets import load_tet_grid, marching_tets


@dataclass(frozen=True)
class DMTetConfig:
    resolution: int = 128
    """Grid size in nvdiffrec's naming: ``resolution / 2`` cubes per axis, 6 tets per cube (even, 4-512)."""
    deform_scale: float = 0.5
    """Largest vertex displacement, as a fraction of a cell edge."""
    cache_dir: str = ""
    """Where built grids are kept; empty: ``$TEXT3D_CACHE_DIR`` or ``~/.cache/text3d``."""


# ---------------------------------------------------------------------------------------------------------- DMTet
class DMTet(nn.Module):
    """Per-vertex SDF and deformation on a cached tet grid covering ``[-bound, bound]^3``.

    Parameters: ``sdf [V]`` and ``deform [V, 3]`` (raw, before ``tanh``). The grid itself is a non-persistent
    buffer: checkpoints hold only the parameters and the grid is rebuilt (or read from the cache) from the config.
    """

    def __init__(self, cfg: DMTetConfig = DMTetConfig(), bound: float = 1.0):
        super().__init__()
        self.cfg = cfg
        self.bound = bound
        verts, tets = load_tet_grid(cfg.resolution, cfg.cache_dir)
        self.register_buffer("grid", verts * bound, persistent=False)
        self.register_buffer("tets", tets, persistent=False)
        self.cell = 2.0 * bound / (cfg.resolution // 2)
        self.sdf = nn.Parameter(torch.zeros(verts.shape[0]))
        self.deform = nn.Parameter(torch.zeros(verts.shape[0], 3))

    def positions(self) -> Float[Tensor, "V 3"]:
        """Deformed grid vertices."""
        return self.grid + (self.cfg.deform_scale * self.cell) * torch.tanh(self.deform)

    def extract(self) -> TriMesh:
        """The current surface (differentiable w.r.t. ``sdf`` and ``deform``)."""
        return marching_tets(self.positions(), self.sdf, self.tets)

    @torch.no_grad()
    def set_sdf(self, sdf: Float[Tensor, "V"]) -> None:
        self.sdf.copy_(sdf.to(self.sdf))
