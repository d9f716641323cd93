"""Pure-PyTorch volume rendering: bounded rays, stratified samples, alpha compositing.

The functional core is :func:`composite` (weights from densities) and :func:`accumulate` (weighted sums); the
:class:`VolumeRenderer` only samples points, asks the field, shades and reshapes. Both are differentiable and
pass ``torch.autograd.gradcheck`` in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from text3d.cameras import Cameras
from text3d.fields.nerf import Background, NeRFField
from text3d.fields.occupancy import OccupancyGrid
from text3d.render.output import RenderOutput
from text3d.render.shading import ShadingMode, ShadingParams, shade


@dataclass(frozen=True)
class VolumeRendererConfig:
    n_samples: int = 64
    """Samples per ray between the ray's entry into and exit from the scene box."""
    chunk_rays: int = 65536
    """Rays per field query when rendering without gradients (previews, video); bounds memory."""


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


def accumulate(weights: Float[Tensor, "R S"], values: Float[Tensor, "R S C"]) -> Float[Tensor, "R C"]:
    return (weights[..., None] * values).sum(dim=-2)


class VolumeRenderer:
    """Renders a :class:`NeRFField` from :class:`Cameras`. Holds no parameters."""

    def __init__(self, cfg: VolumeRendererConfig = VolumeRendererConfig()):
        self.cfg = cfg

    def __call__(
        self,
        field: NeRFField,
        background: Background,
        cameras: Cameras,
        height: int,
        width: int,
        shading: ShadingParams,
        perturb: bool = False,
        generator: torch.Generator | None = None,
        with_normals: bool | None = None,
        occupancy: OccupancyGrid | None = None,
    ) -> RenderOutput:
        """Render ``[B, H, W, *]`` images.

        Args:
            shading: mode and (for lit modes) one light position per camera.
            perturb: jitter the samples inside their bins (training). Rendering without it draws no random numbers,
                so previews never disturb the training RNG stream.
            with_normals: compute density-gradient normals (4 extra field queries per sample); default: only when
                the shading needs them.
            occupancy: if given, the field is queried only at samples in occupied cells (others have density 0).
        """
        b = len(cameras)
        origins, dirs = cameras.rays(height, width)
        if with_normals is None:
            with_normals = shading.mode is not ShadingMode.ALBEDO
        lights = None
        if shading.light_positions is not None:
            lights = shading.light_positions[:, None, None, :].expand(b, height, width, 3).reshape(-1, 3)
        o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        chunk = o.shape[0] if torch.is_grad_enabled() else self.cfg.chunk_rays
        parts = []
        for s in range(0, o.shape[0], chunk):
            sl = slice(s, s + chunk)
            parts.append(
                self._render_rays(
                    field,
                    o[sl],
                    d[sl],
                    None if lights is None else lights[sl],
                    shading,
                    perturb,
                    generator,
                    with_normals,
                    occupancy,
                )
            )
        rgb, opacity, depth, normal, orient = (
            None if parts[0][i] is None else torch.cat([p[i] for p in parts], dim=0) for i in range(5)
        )
        bg = background(dirs)
        rgb = rgb.reshape(b, height, width, 3)
        opacity = opacity.reshape(b, height, width, 1)
        return RenderOutput(
            rgb=rgb + (1.0 - opacity) * bg,
            opacity=opacity,
            depth=depth.reshape(b, height, width, 1),
            normal=None if normal is None else normal.reshape(b, height, width, 3),
            orient=None if orient is None else orient.reshape(b, height, width, 1),
        )

    def _render_rays(self, field, o, d, lights, shading, perturb, generator, with_normals, occupancy):
        n_rays, s = o.shape[0], self.cfg.n_samples
        t, bins, hit = sample_rays(o, d, field.cfg.bound, s, perturb, generator)  # [R, S], [R], [R]
        pts = o[:, None, :] + t[..., None] * d[:, None, :]  # [R, S, 3]
        flat = pts.reshape(-1, 3)
        if occupancy is None:
            out = field(flat, with_normals=with_normals)
            density, albedo = out.density, out.albedo
            normal = out.normal
        else:
            keep = (occupancy.query(flat) & hit[:, None].expand(n_rays, s).reshape(-1)).nonzero()[:, 0]
            out = field(flat[keep], with_normals=with_normals)
            density = flat.new_zeros(flat.shape[0]).index_put((keep,), out.density)
            albedo = flat.new_zeros(flat.shape[0], 3).index_put((keep,), out.albedo)
            normal = (
                None
                if out.normal is None
                else flat.new_zeros(flat.shape[0], 3).index_put((keep,), out.normal)
            )
        density = density.reshape(n_rays, s) * hit[:, None]
        weights = composite(density, bins[:, None].expand(n_rays, s))
        normal = None if normal is None else normal.reshape(n_rays, s, 3)
        albedo = albedo.reshape(n_rays, s, 3)
        light = None if lights is None else lights[:, None, :].expand(n_rays, s, 3)
        color = shade(albedo, normal, pts, light, shading.mode, shading.ambient, shading.diffuse)
        rgb = accumulate(weights, color)
        opacity = weights.sum(dim=-1, keepdim=True)
        depth = accumulate(weights, t[..., None])
        normal_img = orient = None
        if normal is not None:
            normal_img = accumulate(weights, normal)
            facing = (normal * d[:, None, :]).sum(-1).clamp(min=0.0) ** 2
            orient = (weights.detach() * facing).sum(dim=-1, keepdim=True)
        return rgb, opacity, depth, normal_img, orient
