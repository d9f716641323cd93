"""Render a fixed triangle mesh with any :class:`~text3d.render.shading.Shader` (relighting, shader checks).

Rasterize, interpolate positions and smooth vertex normals, shade the covered pixels, composite over a background,
antialias: the one mesh path, used by DMTet (its extracted surface, being optimised), the materials stage's fixed
mesh and relighting.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from text3d.cameras import Cameras
from text3d.geometry.mesh import vertex_normals
from text3d.render import raster
from text3d.render.shading import Shader
from text3d.views import RenderOutput


def render_mesh(
    verts: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    cameras: Cameras,
    height: int,
    width: int,
    shader: Shader,
    state,
    background: Float[Tensor, "3"] | Float[Tensor, "B H W 3"],
    backend: str = "auto",
    fallback: bool = False,
    albedo: Callable[[Tensor], Tensor] | None = None,
) -> RenderOutput:
    """``rgb [B, H, W, 3]`` (the shader's colours over ``background``), ``opacity``, ``depth``, ``normal``.

    ``albedo``: the surface's own colour at points (DMTet's colour field), handed to the shader; without it the
    shader gets grey (a PBR shader reads its own material field instead). Differentiable w.r.t. ``verts``
    (silhouettes through the antialiasing), the shader's state and ``albedo``.
    """
    b = len(cameras)
    bg = background.to(verts).expand(b, height, width, 3) if background.dim() == 1 else background.to(verts)
    homo = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1)
    clip = homo @ cameras.mvp(aspect=width / height).to(verts).transpose(-1, -2)
    rast = raster.rasterize(clip, faces, (height, width), backend=backend, fallback=fallback)
    gbuf = raster.interpolate(torch.cat([verts, vertex_normals(verts, faces)], dim=-1), rast, faces)
    mask = rast.mask
    covered = mask[..., 0] > 0
    bi = covered.nonzero()[:, 0]
    pts = gbuf[..., :3][covered]
    nrm = F.normalize(gbuf[..., 3:][covered], dim=-1, eps=1e-12)
    colour_in = albedo(pts) if albedo is not None else torch.full_like(pts, 0.5)
    color = shader(state, colour_in, nrm, pts, bi)
    fg = torch.zeros_like(bg).index_put((covered,), color.to(bg.dtype))
    normal = torch.zeros_like(bg).index_put((covered,), nrm.to(bg.dtype))
    depth = (gbuf[..., :3] - cameras.positions.to(verts)[:, None, None, :]).norm(dim=-1, keepdim=True) * mask
    image = raster.antialias(torch.cat([fg + (1.0 - mask) * bg, mask], dim=-1), rast, clip, faces)
    return RenderOutput(rgb=image[..., :3], opacity=image[..., 3:], depth=depth, normal=normal)
