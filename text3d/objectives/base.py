"""The objective interface: a render (and the views it was made from) in, weighted loss terms out.

Objectives know nothing of representations or renderers: they see a :class:`text3d.views.RenderOutput` and a
:class:`text3d.views.ViewBatch`. An objective may own trainable state (a LoRA, a learned exposure), so it is an
``nn.Module`` and its state is checkpointed with the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from text3d.profiling import SectionTimer
from text3d.views import RenderOutput, ViewBatch


@dataclass
class ObjectiveOutput:
    """``terms``: weighted loss terms by name, summed (with the regularisers) into the loss; ``logs``: device
    scalars that are only logged (no host sync until the trainer reads them)."""

    terms: dict[str, Tensor]
    logs: dict[str, Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class; subclasses implement :meth:`forward`."""

    def param_groups(self) -> list[dict]:
        """Adam groups of trainable state (none by default)."""
        return []

    def forward(
        self, out: RenderOutput, views: ViewBatch, progress: float, timer: SectionTimer | None = None
    ) -> ObjectiveOutput:
        """Loss terms for one step. ``progress`` in [0, 1] is the fraction of the stage done (for schedules);
        ``timer`` (benchmarks only) may time named sections."""
        raise NotImplementedError
