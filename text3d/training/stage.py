"""A stage: the parts one run of the trainer optimises together, and how long.

A stage is a representation, a view source, a shader and an objective (each an ``nn.Module`` that may own trainable
state) plus Adam's settings and a step count. Recipes (:mod:`text3d.recipes`) build the stages a config asks for;
the trainer only calls the parts' interfaces. Everything the stage's ``state_dict()`` holds is checkpointed in one
file, so exact resume covers pose corrections, environment maps and objective state as well as the fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from text3d.objectives.base import Objective
from text3d.render.shading import Shader
from text3d.representations.base import Representation
from text3d.views import ViewSource


@dataclass(frozen=True)
class OptimConfig:
    """Adam as in threestudio: lr 0.01 for grids/parameters, betas (0.9, 0.99), eps 1e-15."""

    lr: float = 0.01
    network_lr_scale: float = 0.1
    """Small MLPs (and the background) train at ``lr * network_lr_scale``."""
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15


class Stage(nn.Module):
    """Args:
    name: the stage's name in the run folder (``checkpoints/<name>.safetensors``), logs and progress.
    steps: training steps.
    representation, views, shader: what is optimised, where it is seen from, how it is lit.
    objective: what scores the renders; ``None`` for a stage that is only rendered or exported.
    optim: Adam's betas and eps (learning rates are the parts' own, in their parameter groups).
    """

    def __init__(
        self,
        name: str,
        steps: int,
        representation: Representation,
        views: ViewSource,
        shader: Shader,
        objective: Objective | None = None,
        optim: OptimConfig = OptimConfig(),
    ):
        super().__init__()
        self.name = name
        self.steps = steps
        self.representation = representation
        self.views = views
        self.shader = shader
        self.objective = objective
        self.optim = optim

    def parameter_groups(self) -> list[dict]:
        """Adam groups of every trainable part, representation first."""
        parts = [self.representation, self.views, self.shader]
        if self.objective is not None:
            parts.append(self.objective)
        return [group for part in parts for group in part.param_groups()]
