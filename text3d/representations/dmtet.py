"""DMTet: a mesh from a signed distance on a tet grid, rasterized (Magic3D's second stage, the refine stage).

The NeRF at 64² stays blurry; an explicit surface can be rendered sharply at high resolution for little cost.
It starts from a trained NeRF or SDF (:meth:`DMTetRepresentation.init_from`):

- **Geometry from a NeRF**: the SDF at each tet-grid vertex is ``clamp((density - tau) / tau, -1, 1)`` of the
  NeRF's density, where the level ``tau`` is chosen so the isosurface reproduces the NeRF renders' silhouettes
  (:func:`text3d.geometry.isosurface.auto_threshold`: IoU of ``{peak density > tau}`` with ``{opacity > 0.5}``),
  unless ``init_threshold`` fixes it. A fixed level (threestudio's 25) ignores how the renderer turns density into
  opacity, and the mesh then no longer looks like what SDS was scoring. Density is not a distance, so marching
  tets' linear crossing is only roughly where the level set is: the mesh starts up to a fraction of a cell off.
- **Geometry from an SDF**: ``clamp(-f, -1, 1)`` of the field's signed distance (negated: positive inside). A
  distance interpolates linearly, so the first mesh is the SDF's own zero level (what its export would be).
- **Colour**: a copy of the coarse stage's field keeps serving albedo (the NeRF's, or the SDF's albedo rows);
  surface points query its ``albedo``, so the texture continues where the coarse stage left it.

Rendering: rasterize the marching-tets mesh with :mod:`text3d.render.raster` (nvdiffrast on CUDA when installed,
the PyTorch twin elsewhere), interpolate world positions and smooth vertex normals, shade, composite over the
(copied) background and antialias, so silhouettes pass gradients to the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from text3d.cameras import Cameras
from text3d.errors import ConfigError
from text3d.fields.dmtet import DMTet, DMTetConfig
from text3d.fields.nerf import Background, BackgroundConfig, NeRFField, NeRFFieldConfig
from text3d.fields.sdf import SDFField, SDFFieldConfig
from text3d.geometry.asset import Asset
from text3d.geometry.isosurface import auto_threshold
from text3d.geometry.mesh import TriMesh, laplacian_smoothness, normal_consistency
from text3d.render.mesh import render_mesh
from text3d.render.shading import Shader
from text3d.representations.base import Representation
from text3d.representations.nerf import NeRFRepresentation, field_parameter_groups
from text3d.representations.sdf import SDFRepresentation
from text3d.views import RenderOutput, ViewSource


@dataclass(frozen=True)
class DMTetRepresentationConfig:
    dmtet: DMTetConfig = field(default_factory=DMTetConfig)
    colour_field: NeRFFieldConfig | SDFFieldConfig = field(default_factory=NeRFFieldConfig)
    """The colour field's architecture: the field of the stage it starts from, a NeRF's or an SDF's (its weights
    are copied; only its albedo is used)."""
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    raster_backend: str = "auto"
    """``auto`` (nvdiffrast on CUDA when installed, else the PyTorch twin), ``torch`` or ``nvdiffrast``."""
    raster_fallback: bool = False
    """With ``raster_backend=nvdiffrast``: use the twin (with a warning) instead of failing when it cannot run."""
    sdf_lr: float = 0.002
    """Adam step for the SDF, which lives in ``[-1, 1]`` (normalised by the density level, or a distance in world
    units when it starts from an SDF)."""
    deform_lr: float = 0.005
    """Adam step for the raw deformation (before ``tanh``)."""
    lr: float = 0.01
    network_lr_scale: float = 0.1
    init_threshold: float = 0.0
    """Density level of the initial surface; 0 = automatic (matches the NeRF renders' silhouettes)."""
    init_views: int = 8
    init_resolution: int = 64
    lambda_normal_consistency: float = 10000.0
    """Weight of the mean ``1 - cos`` between adjacent face normals (threestudio magic3d-refine)."""
    lambda_laplacian: float = 10000.0
    """Weight of the mean squared uniform Laplacian of the mesh vertices."""


class DMTetRepresentation(Representation):
    """DMTet geometry + an albedo field and background (copied from the NeRF or SDF it starts from)."""

    name = "dmtet"

    def __init__(self, cfg: DMTetRepresentationConfig = DMTetRepresentationConfig()):
        super().__init__()
        self.cfg = cfg
        colour = cfg.colour_field
        self.field = SDFField(colour) if isinstance(colour, SDFFieldConfig) else NeRFField(colour)
        self.background = Background(cfg.background)
        self.dmtet = DMTet(cfg.dmtet, bound=cfg.colour_field.bound)
        self.register_buffer("density_level", torch.zeros(()))
        self._last_mesh: TriMesh | None = None

    # ------------------------------------------------------------------------------------------------- init
    @torch.no_grad()
    def init_from(self, previous: Representation, views: ViewSource | None = None) -> None:
        """Take geometry and colour from a trained NeRF or SDF (see the module docstring); ``views`` gives the
        cameras whose silhouettes the initial surface reproduces (the NeRF stage's view source; unused for an
        SDF, whose zero level is the surface)."""
        if not isinstance(previous, (NeRFRepresentation, SDFRepresentation)):
            raise ConfigError(
                f"a {self.name} stage starts from a nerf or sdf stage, not from a {previous.name} stage"
            )
        if type(previous.field) is not type(self.field):
            raise ConfigError(
                f"the {self.name} stage's colour field is a {type(self.field).__name__}, the {previous.name} "
                f"stage's a {type(previous.field).__name__}: build it with the coarse stage's field config"
            )
        device = next(previous.parameters()).device
        self.to(device)
        self.field.load_state_dict(previous.field.state_dict())
        self.background.load_state_dict(previous.background.state_dict())
        self.dmtet.deform.zero_()
        if isinstance(previous, SDFRepresentation):
            f = torch.cat([previous.field.sdf(chunk) for chunk in self.dmtet.grid.split(1 << 16)])
            self.dmtet.sdf.copy_((-f).clamp(-1.0, 1.0))
            return
        asset = previous.asset()  # the density the NeRF renders saw (occupancy-masked)
        tau = self.cfg.init_threshold
        if tau <= 0:
            if views is None:
                raise ConfigError(
                    "the automatic initial level needs the NeRF stage's views; set init_threshold"
                )
            est = auto_threshold(
                asset.density,
                asset.bound,
                views.silhouette_cameras(self.cfg.init_views, device),
                resolution=self.cfg.init_resolution,
                n_samples=asset.n_samples,
            )
            tau = est.threshold
        grid = self.dmtet.grid
        sigma = torch.cat([asset.density(chunk) for chunk in grid.split(1 << 16)])
        self.dmtet.sdf.copy_(((sigma - tau) / tau).clamp(-1.0, 1.0))
        self.density_level.fill_(tau)

    # --------------------------------------------------------------------------------------------- training
    def param_groups(self) -> list[dict]:
        geometry = [
            {"name": "sdf", "params": [self.dmtet.sdf], "lr": self.cfg.sdf_lr},
            {"name": "deform", "params": [self.dmtet.deform], "lr": self.cfg.deform_lr},
        ]
        return geometry + field_parameter_groups(
            self.field, self.background, self.cfg.lr, self.cfg.network_lr_scale
        )

    def asset(self) -> Asset:
        """The current surface (world units, counter-clockwise from outside) and the albedo field."""
        return Asset(albedo=self.field.albedo, mesh=self.dmtet.extract(), source=self.name)

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
        return render_mesh(
            mesh.verts,
            mesh.faces,
            cameras,
            height,
            width,
            shader,
            shading,
            bg,
            backend=self.cfg.raster_backend,
            fallback=self.cfg.raster_fallback,
            albedo=self.field.albedo,
        )

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
