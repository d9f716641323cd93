"""What every renderer returns, so stages, guidance and previews never care which renderer made an image."""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor


@dataclass
class RenderOutput:
    """Images are ``[B, H, W, C]``, top row first, channels last.

    Attributes:
        rgb: shaded colour composited over the background, in [0, 1].
        opacity: accumulated alpha (volume) or coverage (raster).
        depth: expected ray distance (volume) or camera distance of the visible surface (raster); 0 where empty.
        normal: world-space normals blended by the same weights, when the renderer computed them.
        orient: per-pixel orientation penalty ``sum_i w_i * max(n_i . d, 0)^2`` (volume renderer with normals).
    """

    rgb: Float[Tensor, "B H W 3"]
    opacity: Float[Tensor, "B H W 1"]
    depth: Float[Tensor, "B H W 1"]
    normal: Float[Tensor, "B H W 3"] | None = None
    orient: Float[Tensor, "B H W 1"] | None = None
