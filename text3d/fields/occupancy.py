"""Occupancy grid for empty-space skipping (Instant-NGP / nerfacc style), in pure PyTorch.

A coarse ``R^3`` grid keeps an exponential moving maximum of the field's density, refreshed every few steps at one
jittered point per cell. The volume renderer queries the field only at samples that fall in occupied cells, which
at the blob initialisation is about a tenth of the scene box: roughly 10x fewer field evaluations per step.
The grid is a buffer of the stage, so it is checkpointed and resume stays exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn


@dataclass(frozen=True)
class OccupancyGridConfig:
    enabled: bool = True
    resolution: int = 32
    update_every: int = 16
    decay: float = 0.95
    density_threshold: float = 0.05
    """Cells whose (decayed) max density is below this are skipped. At 64 samples through the unit-radius box a
    sample spans ~0.054, so 0.05 means alpha < 0.3%."""


class OccupancyGrid(nn.Module):
    def __init__(self, cfg: OccupancyGridConfig, bound: float):
        super().__init__()
        self.cfg = cfg
        self.bound = bound
        r = cfg.resolution
        self.register_buffer("density", torch.zeros(r, r, r))
        self.register_buffer("occupied", torch.ones(r, r, r, dtype=torch.bool))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self._initialised_host: bool | None = False
        """Host copy of ``initialised``, so the training step never reads the buffer back; ``None`` after a
        ``load_state_dict`` until the first look (one read per load, not per step)."""
        self.register_load_state_dict_post_hook(
            lambda module, _keys: setattr(module, "_initialised_host", None)
        )

    @property
    def ready(self) -> bool:
        """Whether the grid holds densities (it does after the first :meth:`update` or a checkpoint load)."""
        if self._initialised_host is None:
            self._initialised_host = bool(self.initialised)
        return self._initialised_host

    def cell_index(self, pts: Float[Tensor, "*N 3"]) -> tuple[Tensor, Tensor, Tensor]:
        r = self.cfg.resolution
        ijk = ((pts / self.bound + 1.0) * 0.5 * r).long().clamp(0, r - 1)
        return ijk[..., 0], ijk[..., 1], ijk[..., 2]

    def query(self, pts: Float[Tensor, "*N 3"]) -> Bool[Tensor, "*N"]:
        return self.occupied[self.cell_index(pts)]

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], jitter: bool = True) -> None:
        """Re-evaluate the density at one point per cell (jittered inside the cell) and refresh the mask."""
        r = self.cfg.resolution
        dev = self.density.device
        axis = torch.arange(r, device=dev, dtype=torch.float32)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        offset = torch.rand(grid.shape, device=dev) if jitter else torch.full_like(grid, 0.5)
        pts = ((grid + offset) / r * 2.0 - 1.0) * self.bound
        fresh = density_fn(pts).reshape(r, r, r).float()
        if self.ready:
            self.density.copy_(torch.maximum(self.density * self.cfg.decay, fresh))
        else:
            self.density.copy_(fresh)
            self.initialised.fill_(True)
            self._initialised_host = True
        self.occupied.copy_(self.density > self.cfg.density_threshold)
