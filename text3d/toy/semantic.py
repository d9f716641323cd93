"""Judging a generated object against the toy world: which primitive does its silhouette match, and which of the
world's colours is its albedo, and which way does a crate's yellow half face?

The truth is the world's own ray-cast primitive seen from the same cameras, so a generation can be scored without
any learned judge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from text3d.cameras import Cameras, turntable_cameras
from text3d.toy.world import COLOUR_NAMES, COLOURS, CRATE_BODY, CRATE_FRONT, SHAPES, render_silhouettes


def iou(a: Float[Tensor, "B H W"], b: Float[Tensor, "B H W"], threshold: float = 0.5) -> float:
    """Intersection over union of two stacks of coverage masks, thresholded, pooled over all views."""
    a, b = a > threshold, b > threshold
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 0.0


@dataclass
class SemanticScore:
    """How a generation compares with every primitive and colour of the world.

    Attributes:
        ious: silhouette IoU (8 views pooled) with each shape in :data:`SHAPES`.
        colour: the world colour nearest the mean albedo of the opaque pixels.
        mean_albedo: that mean, RGB in [0, 1].
    """

    ious: dict[str, float]
    colour: str
    mean_albedo: tuple[float, float, float]

    @property
    def best_shape(self) -> str:
        return max(self.ious, key=self.ious.get)

    def margin(self, shape: str) -> float:
        """IoU with ``shape`` minus the best IoU of any other shape."""
        return self.ious[shape] - max(v for k, v in self.ious.items() if k != shape)


def score_cameras(n_views: int = 8) -> Cameras:
    """Eight turntable views at text3d's evaluation elevation, distance and field of view."""
    return turntable_cameras(n_views)


def score_render(
    opacity: Float[Tensor, "B H W"], rgb: Float[Tensor, "B H W 3"], cameras: Cameras
) -> SemanticScore:
    """Score renders (albedo shading) of a generated object seen from ``cameras``."""
    size = opacity.shape[-1]
    ious = {s: iou(opacity, render_silhouettes(cameras, s, size)) for s in SHAPES}
    solid = opacity > 0.9
    if solid.any():
        mean = rgb[solid].mean(0)
    else:
        mean = torch.ones(3)
    palette = torch.tensor(list(COLOURS.values()))
    colour = COLOUR_NAMES[int((palette - mean).norm(dim=-1).argmin())]
    return SemanticScore(ious, colour, tuple(float(v) for v in mean))


def front_colour_share(
    rgb: Float[Tensor, "*B H W 3"], mask: Float[Tensor, "*B H W"], threshold: float = 0.5
) -> Float[Tensor, "*B"]:
    """Share of each image's object pixels (``mask`` over ``threshold``) whose colour is nearer the crate's front
    (yellow) than its body (blue); 0 where an image has no object pixel."""
    front = torch.tensor(COLOURS[CRATE_FRONT]).to(rgb)
    body = torch.tensor(COLOURS[CRATE_BODY]).to(rgb)
    is_front = ((rgb - front).norm(dim=-1) < (rgb - body).norm(dim=-1)).to(rgb.dtype)
    solid = (mask > threshold).to(rgb.dtype)
    return (is_front * solid).sum((-2, -1)) / solid.sum((-2, -1)).clamp(min=1.0)


@dataclass
class FrontScore:
    """Where a generated crate's yellow half faces, from turntable views.

    Attributes:
        azimuths: the views' azimuths in degrees (0 looks from +Z, the export's front).
        shares: per view, the yellow share of the opaque pixels (:func:`front_colour_share`).
    """

    azimuths: list[float]
    shares: list[float]

    @property
    def direction_deg(self) -> float:
        """Azimuth of the shares' resultant (their circular mean): 0 when the yellow half is on +Z."""
        a = torch.deg2rad(torch.tensor(self.azimuths))
        w = torch.tensor(self.shares)
        return float(torch.rad2deg(torch.atan2((w * a.sin()).sum(), (w * a.cos()).sum())))

    @property
    def concentration(self) -> float:
        """Resultant length over the shares' sum: 1 when only one view sees yellow (0.48 for the true
        crate's eight views), near 0 when every side is yellow (a Janus crate) or none is."""
        a = torch.deg2rad(torch.tensor(self.azimuths))
        w = torch.tensor(self.shares)
        total = float(w.sum())
        return float(torch.stack([(w * a.sin()).sum(), (w * a.cos()).sum()]).norm()) / total if total else 0.0

    def share_at(self, azimuth_deg: float) -> float:
        """The share of the view nearest ``azimuth_deg``."""
        d = [abs((a - azimuth_deg + 180.0) % 360.0 - 180.0) for a in self.azimuths]
        return self.shares[d.index(min(d))]


def score_front(
    opacity: Float[Tensor, "B H W"], rgb: Float[Tensor, "B H W 3"], cameras: Cameras
) -> FrontScore:
    """Score albedo renders of a generated crate seen from turntable ``cameras``."""
    shares = front_colour_share(rgb, opacity)
    return FrontScore([float(a) for a in cameras.azimuth], [float(v) for v in shares])
