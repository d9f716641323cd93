"""The representation interface: what a stage optimises, how it renders, regularises, starts and exports.

The trainer calls only these methods, so a new representation is a new class here, never an ``if`` in the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from text3d.cameras import Cameras
from text3d.errors import ConfigError
from text3d.geometry.asset import Asset
from text3d.render.shading import Shader
from text3d.views import RenderOutput, ViewSource


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


class Representation(nn.Module):
    """Base class. Subclasses set ``name`` and implement :meth:`param_groups`, :meth:`render` and :meth:`asset`.

    All tensors that define the result (parameters and persistent buffers) are in ``state_dict()``, which the
    trainer checkpoints; anything rebuilt from the config (a tet grid) is a non-persistent buffer.
    """

    name: str = "representation"

    def before_step(self, step: int) -> None:
        """Called before each training step (e.g. to refresh an occupancy grid)."""

    def param_groups(self) -> list[dict]:
        """Adam parameter groups, each with its own ``lr`` (and a ``name`` for logging)."""
        raise NotImplementedError

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
        """``[B, H, W, *]`` images of the batch. ``shading`` is ``shader``'s state for this batch; ``training``
        turns on random sample jitter (the only random draws a render makes)."""
        raise NotImplementedError

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        """Weighted regulariser terms by name, added to the objective's terms (none by default)."""
        return {}

    def init_from(self, previous: Representation, views: ViewSource | None = None) -> None:
        """Start from the previous stage's trained representation (e.g. DMTet from a NeRF's density); ``views``
        is the previous stage's view source (the cameras its renders were seen from).

        Raises:
            ConfigError: this representation cannot start from that one.
        """
        raise ConfigError(f"a {self.name} stage cannot start from a {previous.name} stage")

    def asset(self) -> Asset:
        """The surface and colours to export."""
        raise NotImplementedError
