"""Coarse stage: a NeRF (hash grid + MLP) volume-rendered at 64², optimised by SDS (DreamFusion / Magic3D)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from text3d.cameras import Cameras
from text3d.fields.nerf import Background, BackgroundConfig, NeRFField, NeRFFieldConfig
from text3d.fields.occupancy import OccupancyGrid, OccupancyGridConfig
from text3d.render.output import RenderOutput
from text3d.render.shading import ShadingParams
from text3d.render.volume import VolumeRenderer, VolumeRendererConfig
from text3d.stages.base import Ramp, Stage, StageConfig, field_parameter_groups


@dataclass(frozen=True)
class CoarseStageConfig(StageConfig):
    steps: int = 10000
    resolution: int = 64
    nerf: NeRFFieldConfig = field(default_factory=NeRFFieldConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    renderer: VolumeRendererConfig = field(default_factory=VolumeRendererConfig)
    occupancy: OccupancyGridConfig = field(default_factory=OccupancyGridConfig)
    lambda_orient: Ramp = Ramp(10.0, 1000.0, 0, 5000)
    """Orientation penalty weight (threestudio: 10 -> 1000 over 5k steps); active on shaded steps."""
    lambda_sparsity: float = 1.0
    """Weight of ``mean(sqrt(opacity^2 + 0.01))``: keeps empty space empty."""


class CoarseStage(Stage):
    name = "coarse"

    def __init__(self, cfg: CoarseStageConfig):
        super().__init__()
        self.cfg = cfg
        self.field = NeRFField(cfg.nerf)
        self.background = Background(cfg.background)
        self.renderer = VolumeRenderer(cfg.renderer)
        self.occupancy = OccupancyGrid(cfg.occupancy, cfg.nerf.bound) if cfg.occupancy.enabled else None

    def before_step(self, step: int) -> None:
        if self.occupancy is not None and (
            step % self.cfg.occupancy.update_every == 0 or not self.occupancy.ready
        ):
            self.occupancy.update(self.field.density)

    def parameter_groups(self) -> list[dict]:
        return field_parameter_groups(self.field, self.background, self.cfg.optim)

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
        return self.renderer(
            self.field,
            self.background,
            cameras,
            height,
            width,
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
