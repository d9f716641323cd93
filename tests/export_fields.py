"""Analytic fields shared by the export tests (a module, not a fixture, so helpers can import them)."""

from __future__ import annotations

import torch


def wavy_albedo(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3] -> [N, 3]``: a smooth colour field in [0.1, 0.9] that varies along every axis."""
    return torch.stack(
        [
            0.5 + 0.4 * torch.sin(3.0 * x[:, 0] + 1.0),
            0.5 + 0.4 * torch.cos(2.5 * x[:, 1]),
            0.5 + 0.4 * torch.sin(2.0 * x[:, 2] - 0.5 * x[:, 0]),
        ],
        dim=-1,
    )


def sphere_density(radius: float = 0.5, sharpness: float = 40.0, peak: float = 50.0):
    """Density ``peak * sigmoid(sharpness * (radius - |x|))``: a soft ball."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return peak * torch.sigmoid(sharpness * (radius - x.norm(dim=-1)))

    return fn
