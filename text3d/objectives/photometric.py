"""The photometric objective: renders against the photos they should reproduce.

The colour term compares every rendered pixel (composited over the representation's background) with the photo
(composited over the same colour when it has a mask); the optional mask term asks the rendered opacity to match
the mask, which pins the silhouette down even where object and background colours agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from text3d.objectives.base import Objective, ObjectiveOutput
from text3d.profiling import SectionTimer
from text3d.views import RenderOutput, ViewBatch

LOSSES = ("l2", "l1", "huber")


@dataclass(frozen=True)
class PhotometricConfig:
    loss: str = "l2"
    """``l2`` (mean squared error: what PSNR measures), ``l1`` or ``huber`` (robust to a few wrong pixels)."""
    huber_delta: float = 0.1
    lambda_rgb: float = 1.0
    lambda_mask: float = 0.1
    """Weight of the mean squared error between rendered opacity and the mask (0 = off; no effect without masks)."""


class PhotometricObjective(Objective):
    def __init__(self, cfg: PhotometricConfig = PhotometricConfig()):
        super().__init__()
        if cfg.loss not in LOSSES:
            raise ValueError(f"photometric loss must be one of {', '.join(LOSSES)}; got {cfg.loss!r}")
        self.cfg = cfg

    def forward(
        self, out: RenderOutput, views: ViewBatch, progress: float, timer: SectionTimer | None = None
    ) -> ObjectiveOutput:
        if views.target is None:
            raise ValueError("the photometric objective needs a view source with target pixels (photos)")
        pred, target = out.rgb, views.target.to(out.rgb.dtype)
        mse = F.mse_loss(pred, target)
        if self.cfg.loss == "l2":
            err = mse
        elif self.cfg.loss == "l1":
            err = F.l1_loss(pred, target)
        else:
            err = F.huber_loss(pred, target, delta=self.cfg.huber_delta)
        terms = {"rgb": self.cfg.lambda_rgb * err}
        if views.mask is not None and self.cfg.lambda_mask > 0:
            terms["mask"] = self.cfg.lambda_mask * F.mse_loss(out.opacity, views.mask.to(out.opacity.dtype))
        with torch.no_grad():
            psnr = -10.0 * torch.log10(mse.detach().clamp_min(1e-10))
        return ObjectiveOutput(terms=terms, logs={"psnr": psnr})
