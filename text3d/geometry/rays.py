"""Rays through the scene box: where to sample them and how samples combine into opacity.

Shared by the volume renderer and the isosurface threshold search, so both see exactly the same opacity.
Functions of tensors only; differentiable, and checked with ``torch.autograd.gradcheck`` in float64.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def ray_aabb(
    origins: Float[Tensor, "R 3"], dirs: Float[Tensor, "R 3"], bound: float
) -> tuple[Float[Tensor, "R"], Float[Tensor, "R"]]:
    """Entry and exit distances of rays through the cube ``[-bound, bound]^3``; ``near >= far`` on a miss."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (-bound - origins) / safe
    t1 = (bound - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, far


def sample_rays(
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    bound: float,
    n_samples: int,
    perturb: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Float[Tensor, "R S"], Float[Tensor, "R"], Tensor]:
    """Sample distances ``t`` in ``n_samples`` equal bins between a ray's entry into and exit from the scene box.

    Returns ``t [R, S]`` (bin midpoints, or uniformly jittered inside the bins when ``perturb``), the bin length
    ``[R]`` and the hit mask ``[R]`` (rays that miss get a tiny dummy interval). The renderer and the export's
    threshold search both sample with this, so they see the same opacity.
    """
    near, far = ray_aabb(origins, dirs, bound)
    hit = far > near
    far = torch.where(hit, far, near + 1e-3)
    bins = (far - near) / n_samples
    u = torch.arange(n_samples, device=origins.device, dtype=origins.dtype)[None, :]
    if perturb:
        dev = generator.device if generator is not None else origins.device
        u = u + torch.rand(origins.shape[0], n_samples, generator=generator, device=dev).to(origins)
    else:
        u = u + 0.5
    return near[:, None] + bins[:, None] * u, bins, hit


def composite(density: Float[Tensor, "R S"], deltas: Float[Tensor, "R S"]) -> Float[Tensor, "R S"]:
    """Compositing weights ``w_i = alpha_i * prod_{j<i} (1 - alpha_j)`` with ``alpha = 1 - exp(-density * delta)``."""
    tau = density * deltas
    alpha = 1.0 - torch.exp(-tau)
    # Transmittance from the exclusive cumulative optical depth: exact and stable, no product of (1 - alpha).
    accum = torch.cumsum(tau, dim=-1)
    trans = torch.exp(-(accum - tau))
    return alpha * trans
