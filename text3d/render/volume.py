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
from text3d.geometry.rays import composite, sample_rays
from text3d.render.shading import Shader
from text3d.views import RenderOutput


@dataclass(frozen=True)
class VolumeRendererConfig:
    n_samples: int = 64
    """Samples per ray between the ray's entry into and exit from the scene box."""
    chunk_rays: int = 65536
    """Rays per field query when rendering without gradients (previews, video); bounds memory."""


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
        shader: Shader,
        shading,
        perturb: bool = False,
        generator: torch.Generator | None = None,
        with_normals: bool | None = None,
        occupancy: OccupancyGrid | None = None,
    ) -> RenderOutput:
        """Render ``[B, H, W, *]`` images.

        Args:
            shader: colours the samples; ``shading`` is its state for this batch (:meth:`Shader.sample`).
            perturb: jitter the samples inside their bins (training). Rendering without it draws no random numbers,
                so previews never disturb the training RNG stream.
            with_normals: compute density-gradient normals (4 extra field queries per sample); default: only when
                the shading needs them.
            occupancy: if given, the field is queried only at samples in occupied cells (others have density 0).
        """
        b = len(cameras)
        origins, dirs = cameras.rays(height, width)
        if with_normals is None:
            with_normals = shading.needs_normals
        ray_camera = torch.arange(b, device=origins.device).repeat_interleave(height * width)  # [R]
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
                    ray_camera[sl],
                    shader,
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

    def _render_rays(
        self, field, o, d, ray_camera, shader, shading, perturb, generator, with_normals, occupancy
    ):
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
        color = shader(shading, albedo, normal, pts, ray_camera[:, None].expand(n_rays, s))
        rgb = accumulate(weights, color)
        opacity = weights.sum(dim=-1, keepdim=True)
        depth = accumulate(weights, t[..., None])
        normal_img = orient = None
        if normal is not None:
            normal_img = accumulate(weights, normal)
            facing = (normal * d[:, None, :]).sum(-1).clamp(min=0.0) ** 2
            orient = (weights.detach() * facing).sum(dim=-1, keepdim=True)
        return rgb, opacity, depth, normal_img, orient
