"""Photometric where the view has a target, SDS elsewhere: texturing from one concept image plus a prompt.

The concept view (:class:`text3d.views.concept.ConceptViews`) carries the image as its target and gets the
photometric loss; every other view has no target and is scored by SDS, which fills in what the image cannot see.
"""

from __future__ import annotations

from text3d.objectives.base import Objective, ObjectiveOutput
from text3d.objectives.photometric import PhotometricObjective
from text3d.objectives.sds import SDSObjective
from text3d.profiling import SectionTimer
from text3d.views import RenderOutput, ViewBatch


class ConceptObjective(Objective):
    """``photometric`` terms for views with a target, ``sds`` terms (times ``sds_weight``) for the rest."""

    def __init__(self, photometric: PhotometricObjective, sds: SDSObjective, sds_weight: float = 1.0):
        super().__init__()
        self.photometric = photometric
        self.sds = sds
        self.sds_weight = sds_weight

    def forward(
        self, out: RenderOutput, views: ViewBatch, progress: float, timer: SectionTimer | None = None
    ) -> ObjectiveOutput:
        if views.target is not None:
            return self.photometric(out, views, progress, timer)
        scored = self.sds(out, views, progress, timer)
        terms = {k: self.sds_weight * v for k, v in scored.terms.items()}
        return ObjectiveOutput(terms=terms, logs=scored.logs)
