"""Fine stage: a DMTet mesh rasterized at 512², optimised by SDS with t in [0.02, 0.5] (Magic3D's second stage).

The coarse NeRF at 64² stays blurry; an explicit surface can be rendered sharply at high resolution for little
cost. The stage is initialised from the coarse one (:meth:`RefineStage.init_from`):

- **Geometry**: the SDF at each tet-grid vertex is ``clamp((density - tau) / tau, -1, 1)`` of the coarse
  density, where the level ``tau`` is chosen so the isosurface reproduces the coarse renders' silhouettes
  (:func:`text3d.export.mesh.auto_threshold`: IoU of ``{peak density > tau}`` with ``{opacity > 0.5}``), unless
  ``init_threshold`` fixes it. A fixed level (threestudio's 25) ignores how the renderer turns density into
  opacity, and the mesh then no longer looks like what SDS was scoring.
- **Colour**: a copy of the coarse NeRF field keeps serving albedo; surface points query
  :meth:`text3d.fields.nerf.NeRFField.albedo`, so the texture continues where the coarse stage left it.

Rendering: rasterize the marching-tets mesh with :mod:`text3d.render.raster` (nvdiffrast on CUDA when installed,
the PyTorch twin elsewhere), interpolate world positions and smooth vertex normals, shade with the coarse stage's
shading model, composite over the (copied) background and antialias, so silhouettes pass gradients to the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.cameras import Cameras, CameraSamplerConfig
from text3d.fields.dmtet import DMTet, DMTetConfig, TriMesh
from text3d.fields.mesh_ops import laplacian_smoothness, normal_consistency, vertex_normals
from text3d.fields.nerf import Background, BackgroundConfig, NeRFField, NeRFFieldConfig
from text3d.guidance.stable_diffusion import SDSConfig
from text3d.render import raster
from text3d.render.output import RenderOutput
from text3d.render.shading import ShadingConfig, ShadingParams, shade
from text3d.stages.base import Stage, StageConfig, field_parameter_groups


@dataclass(frozen=True)
class RefineStageConfig(StageConfig):
    steps: int = 5000
    resolution: int = 512
    cameras: CameraSamplerConfig = field(default_factory=lambda: CameraSamplerConfig(fovy_range=(30.0, 45.0)))
    sds: SDSConfig = field(default_factory=lambda: SDSConfig(t_range=(0.02, 0.5)))
    shading: ShadingConfig = field(default_factory=lambda: ShadingConfig(albedo_only_steps=0))
    """Lit and textureless renders from the first step: the colour already settled in the coarse stage."""
    dmtet: DMTetConfig = field(default_factory=DMTetConfig)
    """The tet grid (``dmtet.resolution``, 128 by default, in nvdiffrec's naming) and the deformation bound."""
    raster_backend: str = "auto"
    """``auto`` (nvdiffrast on CUDA when installed, else the PyTorch twin), ``torch`` or ``nvdiffrast``."""
    raster_fallback: bool = False
    """With ``raster_backend=nvdiffrast``: use the twin (with a warning) instead of failing when it cannot run."""
    sdf_lr: float = 0.002
    """Adam step for the SDF, which lives in ``[-1, 1]`` (normalised by the density level)."""
    deform_lr: float = 0.005
    """Adam step for the raw deformation (before ``tanh``)."""
    init_threshold: float = 0.0
    """Density level of the initial surface; 0 = automatic (matches the coarse renders' silhouettes)."""
    init_views: int = 8
    init_resolution: int = 64
    lambda_normal_consistency: float = 10000.0
    """Weight of the mean ``1 - cos`` between adjacent face normals (threestudio magic3d-refine)."""
    lambda_laplacian: float = 10000.0
    """Weight of the mean squared uniform Laplacian of the mesh vertices."""


class RefineStage(Stage):
    """DMTet geometry + the coarse stage's albedo field and background.

    Args:
        cfg: this stage's settings.
        nerf: the coarse stage's field config (the colour field is a copy of that field).
        background: the coarse stage's background config.
    """

    name = "refine"

    def __init__(
        self,
        cfg: RefineStageConfig,
        nerf: NeRFFieldConfig | None = None,
        background: BackgroundConfig | None = None,
    ):
        super().__init__()
        nerf = nerf or NeRFFieldConfig()
        background = background or BackgroundConfig()
        self.cfg = cfg
        self.field = NeRFField(nerf)
        self.background = Background(background)
        self.dmtet = DMTet(cfg.dmtet, bound=nerf.bound)
        self.register_buffer("density_level", torch.zeros(()))
        self._last_mesh: TriMesh | None = None

    # ------------------------------------------------------------------------------------------------- init
    @torch.no_grad()
    def init_from(self, coarse: Stage) -> None:
        """Take geometry and colour from a trained coarse stage (see the module docstring)."""
        from text3d.export.exporter import occupancy_masked, threshold_cameras
        from text3d.export.mesh import auto_threshold

        device = next(coarse.parameters()).device
        self.to(device)
        self.field.load_state_dict(coarse.field.state_dict())
        self.background.load_state_dict(coarse.background.state_dict())
        # The density the coarse renders saw: zero outside the occupancy grid's occupied cells.
        density = occupancy_masked(coarse.field.density, getattr(coarse, "occupancy", None))
        tau = self.cfg.init_threshold
        if tau <= 0:
            cams = threshold_cameras(coarse.cfg.cameras, self.cfg.init_views, device)
            est = auto_threshold(
                density,
                coarse.field.cfg.bound,
                cams,
                resolution=self.cfg.init_resolution,
                n_samples=coarse.cfg.renderer.n_samples,
            )
            tau = est.threshold
        grid = self.dmtet.grid
        sigma = torch.cat([density(chunk) for chunk in grid.split(1 << 16)])
        self.dmtet.sdf.copy_(((sigma - tau) / tau).clamp(-1.0, 1.0))
        self.dmtet.deform.zero_()
        self.density_level.fill_(tau)

    # --------------------------------------------------------------------------------------------- training
    def parameter_groups(self) -> list[dict]:
        geometry = [
            {"name": "sdf", "params": [self.dmtet.sdf], "lr": self.cfg.sdf_lr},
            {"name": "deform", "params": [self.dmtet.deform], "lr": self.cfg.deform_lr},
        ]
        return geometry + field_parameter_groups(self.field, self.background, self.cfg.optim)

    def export_mesh(self) -> TriMesh:
        """The current surface (world units, counter-clockwise from outside), for export."""
        return self.dmtet.extract()

    def albedo(self, points: Tensor) -> Tensor:
        """Surface colour ``[N, 3]`` at world points ``[N, 3]`` (texture baking uses this)."""
        return self.field.albedo(points)

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        shading: ShadingParams,
        training: bool = False,
        generator: torch.Generator | None = None,
        with_normals: bool | None = None,
    ) -> RenderOutput:
        """Rasterize the current mesh: ``[B, H, W, *]`` images, top row first."""
        mesh = self.dmtet.extract()
        if training:
            self._last_mesh = mesh
        b = len(cameras)
        _, dirs = cameras.rays(height, width)
        bg = self.background(dirs)
        if mesh.is_empty:  # nothing crosses zero: the picture is the background (keeps the graph connected)
            zero = self.dmtet.sdf.sum() * 0.0
            empty = torch.zeros(b, height, width, 1, device=dirs.device) + zero
            return RenderOutput(rgb=bg + zero, opacity=empty, depth=empty, normal=empty.expand(-1, -1, -1, 3))
        verts, faces = mesh.verts, mesh.faces
        homo = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1)
        clip = homo @ cameras.mvp(aspect=width / height).transpose(-1, -2)  # [B, V, 4]
        rast = raster.rasterize(
            clip, faces, (height, width), backend=self.cfg.raster_backend, fallback=self.cfg.raster_fallback
        )
        gbuf = raster.interpolate(torch.cat([verts, vertex_normals(verts, faces)], dim=-1), rast, faces)
        mask = rast.mask  # [B, H, W, 1]
        covered = mask[..., 0] > 0
        bi = covered.nonzero()[:, 0]
        pts = gbuf[..., :3][covered]
        nrm = F.normalize(gbuf[..., 3:][covered], dim=-1, eps=1e-12)
        lights = None if shading.light_positions is None else shading.light_positions[bi]
        color = shade(
            self.field.albedo(pts), nrm, pts, lights, shading.mode, shading.ambient, shading.diffuse
        )
        fg = torch.zeros_like(bg).index_put((covered,), color.to(bg.dtype))
        normal = torch.zeros_like(bg).index_put((covered,), nrm.to(bg.dtype))
        depth = (gbuf[..., :3] - cameras.positions[:, None, None, :]).norm(dim=-1, keepdim=True) * mask
        # Antialias colour and coverage together: the silhouette gradients reach the vertices through both.
        image = torch.cat([fg + (1.0 - mask) * bg, mask], dim=-1)
        image = raster.antialias(image, rast, clip, faces)
        return RenderOutput(rgb=image[..., :3], opacity=image[..., 3:], depth=depth, normal=normal)

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        """Smoothness of the mesh rendered in the last training step."""
        mesh = self._last_mesh
        if mesh is None or mesh.is_empty:
            return {}
        terms: dict[str, Tensor] = {}
        if self.cfg.lambda_normal_consistency > 0:
            terms["normal_consistency"] = self.cfg.lambda_normal_consistency * normal_consistency(
                mesh.verts, mesh.faces
            )
        if self.cfg.lambda_laplacian > 0:
            terms["laplacian"] = self.cfg.lambda_laplacian * laplacian_smoothness(mesh.verts, mesh.faces)
        return terms
