"""Score Distillation Sampling as an objective: the frozen diffusion model (:mod:`text3d.guidance`) scores the
renders against a prompt's cached embeddings, with view-dependent prompts from the cameras' angles."""

from __future__ import annotations

from text3d.guidance.prompts import TextEmbeddings
from text3d.guidance.stable_diffusion import SDSConfig, StableDiffusionGuidance
from text3d.objectives.base import Objective, ObjectiveOutput
from text3d.profiling import SectionTimer
from text3d.views import RenderOutput, ViewBatch


class SDSObjective(Objective):
    """``{"sds": loss}``, logging the SDS gradient's norm.

    Args:
        guidance: the frozen model (not an ``nn.Module`` child: nothing of it is trained or checkpointed).
        text: the prompt's embeddings (plain, per view, negative), encoded once.
        cfg: guidance scale, timestep range and schedule, weighting, Perp-Neg.
    """

    def __init__(self, guidance: StableDiffusionGuidance, text: TextEmbeddings, cfg: SDSConfig):
        super().__init__()
        self.guidance = guidance
        self.text = text
        self.cfg = cfg

    def forward(
        self, out: RenderOutput, views: ViewBatch, progress: float, timer: SectionTimer | None = None
    ) -> ObjectiveOutput:
        cams = views.cameras
        g = self.guidance(
            out.rgb, self.text, cams.elevation, cams.azimuth, self.cfg, progress=progress, timer=timer
        )
        return ObjectiveOutput(terms={"sds": g.loss}, logs={"grad_norm": g.grad_norm})
