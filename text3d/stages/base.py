"""What a training stage is: a representation with a renderer, plus the settings the trainer needs.

The trainer (``text3d.trainer``) drives any :class:`Stage`; the coarse NeRF stage and the fine DMTet stage differ
only in what they render and regularise. Stage configs share the fields of :class:`StageConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from text3d.cameras import Cameras, CameraSamplerConfig
from text3d.guidance.stable_diffusion import SDSConfig
from text3d.render.output import RenderOutput
from text3d.render.shading import ShadingConfig, ShadingParams


@dataclass(frozen=True)
class OptimConfig:
    """Adam as in threestudio: lr 0.01 for grids/parameters, betas (0.9, 0.99), eps 1e-15."""

    lr: float = 0.01
    network_lr_scale: float = 0.1
    """Small MLPs (and the background) train at ``lr * network_lr_scale``."""
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15


@dataclass(frozen=True)
class Ramp:
    """A weight that moves linearly from ``start`` to ``end`` between two steps (constant outside)."""

    start: float
    end: float
    start_step: int = 0
    end_step: int = 0

    def __call__(self, step: int) -> float:
        if self.end_step <= self.start_step or step >= self.end_step:
            return self.end if step >= self.start_step else self.start
        if step <= self.start_step:
            return self.start
        frac = (step - self.start_step) / (self.end_step - self.start_step)
        return self.start + (self.end - self.start) * frac


@dataclass(frozen=True)
class StageConfig:
    """Settings every stage has; the trainer reads only these."""

    steps: int = 10000
    resolution: int = 64
    """Square render size during training (pixels)."""
    cameras: CameraSamplerConfig = field(default_factory=CameraSamplerConfig)
    sds: SDSConfig = field(default_factory=SDSConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    shading: ShadingConfig = field(default_factory=ShadingConfig)


def field_parameter_groups(field: nn.Module, background: nn.Module, optim: OptimConfig) -> list[dict]:
    """Adam groups of a hash-grid field and its background: the grid at ``lr``, the small MLPs (and a learned
    background) at ``lr * network_lr_scale``. Both stages train their colour field this way."""
    net_lr = optim.lr * optim.network_lr_scale
    groups = [
        {"name": "encoding", "params": list(field.encoding.parameters()), "lr": optim.lr},
        {"name": "mlp", "params": list(field.mlp.parameters()), "lr": net_lr},
    ]
    bg = list(background.parameters())
    if bg:
        groups.append({"name": "background", "params": bg, "lr": net_lr})
    return groups


class Stage(nn.Module):
    """Base class of the coarse and fine stages. Subclasses set ``name`` and implement the three methods."""

    name: str = "stage"
    cfg: StageConfig

    def before_step(self, step: int) -> None:
        """Called by the trainer before each training step (e.g. to refresh an occupancy grid)."""

    def parameter_groups(self) -> list[dict]:
        """Adam parameter groups (each with its own ``lr``)."""
        raise NotImplementedError

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        shading: ShadingParams,
        training: bool = False,
        generator: torch.Generator | None = None,
    ) -> RenderOutput:
        raise NotImplementedError

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        """Weighted regulariser terms, by name (for logging); the trainer adds them to the SDS loss."""
        raise NotImplementedError
