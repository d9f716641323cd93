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


def detailed_albedo(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3] -> [N, 3]``: stripes and blobs with wavelengths down to ~0.2 field units (a few % of the asset),
    so a texture too coarse or misaligned by a few texels shows."""
    r = 0.5 + 0.25 * torch.sin(30.0 * x[:, 0]) + 0.2 * torch.sin(17.0 * x[:, 1] + 9.0 * x[:, 2])
    g = 0.5 + 0.35 * torch.sin(23.0 * x[:, 1] - 11.0 * x[:, 0]) * torch.cos(13.0 * x[:, 2])
    b = 0.5 + 0.4 * torch.tanh(4.0 * torch.sin(19.0 * x[:, 2] + 7.0 * x[:, 0]))
    return torch.stack([r, g, b], dim=-1).clamp(0, 1)
