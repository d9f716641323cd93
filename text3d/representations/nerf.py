"""A NeRF: hash-grid density and albedo field plus a background, volume-rendered (DreamFusion / Magic3D's coarse
stage). Empty space is skipped with an occupancy grid; regularisers keep normals facing the camera and empty space
empty."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from text3d.cameras import Cameras
from text3d.fields.encoding import apply_coarse_to_fine
from text3d.fields.nerf import Background, BackgroundConfig, NeRFField, NeRFFieldConfig
from text3d.fields.occupancy import OccupancyGrid, OccupancyGridConfig
from text3d.geometry.asset import Asset
from text3d.geometry.isosurface import occupancy_masked
from text3d.render.shading import Shader
from text3d.render.volume import VolumeRenderer, VolumeRendererConfig
from text3d.representations.base import Ramp, Representation
from text3d.views import RenderOutput


@dataclass(frozen=True)
class NeRFConfig:
    field: NeRFFieldConfig = dataclasses.field(default_factory=NeRFFieldConfig)
    background: BackgroundConfig = dataclasses.field(default_factory=BackgroundConfig)
    renderer: VolumeRendererConfig = dataclasses.field(default_factory=VolumeRendererConfig)
    occupancy: OccupancyGridConfig = dataclasses.field(default_factory=OccupancyGridConfig)
    lambda_orient: Ramp = Ramp(10.0, 1000.0, 0, 5000)
    """Orientation penalty weight (threestudio: 10 -> 1000 over 5k steps); active on shaded steps."""
    lambda_sparsity: float = 1.0
    """Weight of ``mean(sqrt(opacity^2 + 0.01))``: keeps empty space empty."""
    lr: float = 0.01
    """Adam step of the hash grid."""
    network_lr_scale: float = 0.1
    """Small MLPs (and the background) train at ``lr * network_lr_scale``."""
    coarse_to_fine: tuple[int, int] = (0, 0)
    """Steps ``(start, end)`` over which the hash grid's levels open, coarsest first (BARF's schedule,
    :func:`~text3d.fields.encoding.coarse_to_fine_weights`): what lets poses a few degrees off converge when they are
    refined. ``end <= start``: all levels from the start."""


def field_parameter_groups(
    field: nn.Module, background: nn.Module, lr: float, network_lr_scale: float
) -> list[dict]:
    """Adam groups of a hash-grid field and its background: the grid at ``lr``, the small MLPs (and a learned
    background) at ``lr * network_lr_scale``. The NeRF and DMTet representations train their colour field so."""
    net_lr = lr * network_lr_scale
    groups = [
        {"name": "encoding", "params": list(field.encoding.parameters()), "lr": lr},
        {"name": "mlp", "params": list(field.mlp.parameters()), "lr": net_lr},
    ]
    bg = list(background.parameters())
    if bg:
        groups.append({"name": "background", "params": bg, "lr": net_lr})
    return groups


class NeRFRepresentation(Representation):
    name = "nerf"

    def __init__(self, cfg: NeRFConfig = NeRFConfig()):
        super().__init__()
        self.cfg = cfg
        self.field = NeRFField(cfg.field)
        self.background = Background(cfg.background)
        self.renderer = VolumeRenderer(cfg.renderer)
        self.occupancy = OccupancyGrid(cfg.occupancy, cfg.field.bound) if cfg.occupancy.enabled else None

    def before_step(self, step: int) -> None:
        apply_coarse_to_fine(self.field.encoding, self.cfg.coarse_to_fine, step)
        if self.occupancy is not None and (
            step % self.cfg.occupancy.update_every == 0 or not self.occupancy.ready
        ):
            self.occupancy.update(self.field.density)

    def param_groups(self) -> list[dict]:
        return field_parameter_groups(self.field, self.background, self.cfg.lr, self.cfg.network_lr_scale)

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
        return self.renderer(
            self.field,
            self.background,
            cameras,
            height,
            width,
            shader,
            shading,
            perturb=training,
            generator=generator,
            with_normals=with_normals,
            occupancy=self.occupancy,
        )

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if out.orient is not None:
            covered = (out.opacity.detach() > 0).sum().clamp(min=1)
            terms["orient"] = self.cfg.lambda_orient(step) * out.orient.sum() / covered
        if self.cfg.lambda_sparsity > 0:
            terms["sparsity"] = self.cfg.lambda_sparsity * (out.opacity**2 + 0.01).sqrt().mean()
        return terms

    def masked_density(self):
        """The density the renders saw: the field's, zero outside the occupancy grid's occupied cells."""
        return occupancy_masked(self.field.density, self.occupancy)

    def asset(self) -> Asset:
        return Asset(
            albedo=self.field.albedo,
            density=self.masked_density(),
            bound=self.cfg.field.bound,
            n_samples=self.cfg.renderer.n_samples,
            source=self.name,
        )
