"""An SDF: a hash-grid signed distance field with albedo, sphere-traced, with an eikonal regulariser.

The third representation beside the NeRF and DMTet. The surface is the field's zero level, so it is always closed
and its normals are the field's gradient; there is no density threshold anywhere:

- **Render**: :func:`text3d.render.sphere_trace.render_sdf`: a march without gradients, then the hit point made
  differentiable by implicit differentiation, normals by autograd, shading through the stage's shader, and a
  differentiable silhouette (``tracer.silhouette``: ``band`` by default, or ``idr``).
- **Regulariser**: eikonal, ``mean((|grad f| - 1)^2)`` on random points of the scene box and on the last render's
  hit points, so ``f`` stays a distance (sphere tracing relies on it) and normals stay well defined. Optionally a
  normal smoothness term (``lambda_smooth``), ``mean(|n(x) - n(x + e)|^2)`` between each hit point and a random
  neighbour ``smooth_radius`` away (UNISURF / IDR-style): a distance field can ripple at the hash grid's finest
  cells without breaking the eikonal term, and photos of a textured object only weakly forbid it.
- **Asset**: marching tets on the zero level of ``-f`` sampled on the tet grid (the tet code wants positive
  inside): exact, no threshold search. Grid vertices on the box's faces count as outside, so the mesh is closed
  even where the shape touches the box.
- **Start**: fresh, from the field's sphere (``field.init_radius``); it does not start from another stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from text3d.cameras import Cameras
from text3d.fields.encoding import apply_coarse_to_fine
from text3d.fields.nerf import Background, BackgroundConfig
from text3d.fields.sdf import SDFField, SDFFieldConfig
from text3d.geometry.asset import Asset
from text3d.geometry.tets import load_tet_grid, marching_tets
from text3d.render.shading import Shader
from text3d.render.sphere_trace import SphereTraceConfig, check_config, render_sdf
from text3d.representations.base import Representation
from text3d.representations.nerf import field_parameter_groups
from text3d.views import RenderOutput


@dataclass(frozen=True)
class SDFConfig:
    """The SDF representation's own settings (its background and learning rates come from the stage)."""

    field: SDFFieldConfig = dataclasses.field(default_factory=SDFFieldConfig)
    tracer: SphereTraceConfig = dataclasses.field(default_factory=SphereTraceConfig)
    lambda_eikonal: float = 0.1
    """Weight of ``mean((|grad f| - 1)^2)``."""
    eikonal_points: int = 2048
    """Uniform random points in the scene box per step for the eikonal term (plus the step's hit points)."""
    lambda_smooth: float = 0.0
    """Weight of the normal smoothness term at the last training render's hit points (0 = off)."""
    smooth_radius: float = 0.01
    """Distance of each hit point's random neighbour in the smoothness term (world units)."""
    mesh_resolution: int = 128
    """Tet grid of the exported surface, in DMTet's naming (``resolution / 2`` cubes per axis; even, 4-512)."""
    cache_dir: str = ""
    """Where built tet grids are kept; empty: ``$TEXT3D_CACHE_DIR`` or ``~/.cache/text3d``."""


class SDFRepresentation(Representation):
    name = "sdf"

    def __init__(
        self,
        cfg: SDFConfig = SDFConfig(),
        background: BackgroundConfig | None = None,
        lr: float = 0.01,
        network_lr_scale: float = 0.1,
        coarse_to_fine: tuple[int, int] = (0, 0),
    ):
        """``coarse_to_fine``: steps ``(start, end)`` over which the hash grid's levels open, coarsest first (BARF's
        schedule for pose refinement, as :attr:`text3d.representations.nerf.NeRFConfig.coarse_to_fine`)."""
        super().__init__()
        check_config(cfg.tracer)
        self.cfg = cfg
        self.lr, self.network_lr_scale = lr, network_lr_scale
        self.coarse_to_fine = coarse_to_fine
        self.field = SDFField(cfg.field)
        self.background = Background(background or BackgroundConfig())
        self._last_hits: Tensor | None = None

    @property
    def bound(self) -> float:
        return self.cfg.field.bound

    def param_groups(self) -> list[dict]:
        return field_parameter_groups(self.field, self.background, self.lr, self.network_lr_scale)

    def before_step(self, step: int) -> None:
        apply_coarse_to_fine(self.field.encoding, self.coarse_to_fine, step)

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        shader: Shader,
        shading,
        training: bool = False,
        generator: torch.Generator | None = None,
        with_normals: bool | None = None,
    ) -> RenderOutput:
        out, rays = render_sdf(
            self.field,
            self.background,
            cameras,
            height,
            width,
            shader,
            shading,
            self.bound,
            self.cfg.tracer,
            with_normals=with_normals,
            create_graph=training and torch.is_grad_enabled(),
        )
        if training:
            self._last_hits = rays.points.detach()
        return out

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        c = self.cfg
        if c.lambda_eikonal <= 0 and c.lambda_smooth <= 0:
            return {}
        eikonal, smooth = self.eikonal_and_smoothness()
        terms = {}
        if c.lambda_eikonal > 0:
            terms["eikonal"] = c.lambda_eikonal * eikonal
        if c.lambda_smooth > 0 and smooth is not None:
            terms["smooth"] = c.lambda_smooth * smooth
        return terms

    def eikonal(self) -> Tensor:
        """``mean((|grad f| - 1)^2)`` over uniform points of the box and the last training render's hit points."""
        return self.eikonal_and_smoothness()[0]

    def eikonal_and_smoothness(self) -> tuple[Tensor, Tensor | None]:
        """The eikonal term (see :meth:`eikonal`) and, with ``lambda_smooth > 0`` and hit points, the mean
        ``|n(x) - n(x')|^2`` of unit normals at each hit point ``x`` and ``x'`` a random ``smooth_radius`` away:
        one batched gradient evaluation for both."""
        p = next(self.field.parameters())
        pts = (
            torch.rand(self.cfg.eikonal_points, 3, device=p.device, dtype=p.dtype) * 2.0 - 1.0
        ) * self.bound
        hits = None if self._last_hits is None else self._last_hits.to(pts)
        n_hits = 0 if hits is None else hits.shape[0]
        smooth = self.cfg.lambda_smooth > 0 and n_hits > 0
        if hits is not None:
            pts = torch.cat([pts, hits])
        if smooth:
            offset = torch.nn.functional.normalize(torch.randn_like(hits), dim=-1) * self.cfg.smooth_radius
            pts = torch.cat([pts, hits + offset])
        pts.requires_grad_(True)
        f = self.field.sdf(pts)
        (g,) = torch.autograd.grad(f.sum(), pts, create_graph=True)
        eikonal = ((g.norm(dim=-1) - 1.0) ** 2).mean()
        if not smooth:
            return eikonal, None
        n = torch.nn.functional.normalize(g[-2 * n_hits :], dim=-1)
        return eikonal, ((n[:n_hits] - n[n_hits:]) ** 2).sum(-1).mean()

    @torch.no_grad()
    def surface(self, resolution: int | None = None):
        """The zero level of the field by marching tets on the tet grid (world units, counter-clockwise from
        outside); grid vertices on the box's faces count as outside, so the mesh is closed."""
        res = resolution or self.cfg.mesh_resolution
        grid, tets = load_tet_grid(res, self.cfg.cache_dir)
        p = next(self.field.parameters())
        pos = grid.to(p.device) * self.bound
        inside = -torch.cat([self.field.sdf(c.to(p.dtype)).float() for c in pos.split(1 << 16)])
        on_box = grid.abs().amax(dim=-1).to(p.device) >= 1.0 - 1e-6
        inside = torch.where(on_box, inside.clamp(max=-1e-4), inside)
        # A vertex exactly on the zero level would put several crossings on one point (faces of zero area, which
        # export's clean-up removes, opening holes): nudge such values outside by 1e-4 of a cell.
        tiny = 1e-4 * 2.0 * self.bound / (res // 2)
        inside = torch.where(inside.abs() < tiny, torch.full_like(inside, -tiny), inside)
        return marching_tets(pos, inside, tets.to(p.device))

    def asset(self) -> Asset:
        return Asset(albedo=self.field.albedo, mesh=self.surface(), source=self.name)
