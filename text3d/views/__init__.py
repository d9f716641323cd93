"""What the trainer asks for and what it gets back: view sources, view batches and render outputs.

A :class:`ViewSource` gives each training step its cameras (and, for photos, the target pixels and masks): random
orbit cameras for text-to-3D (:class:`OrbitViews`), posed photos with learnable pose corrections for fitting. It is
an ``nn.Module`` so that trainable state (pose corrections) is checkpointed with the stage. Every renderer returns
a :class:`RenderOutput`, so objectives, previews and export never care which renderer made an image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from text3d.cameras import Cameras, CameraSamplerConfig, sample_cameras, threshold_cameras, turntable_cameras


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


@dataclass
class ViewBatch:
    """One step's views: cameras and image size, plus what photos provide (absent for text-to-3D).

    Attributes:
        target: ``[B, H, W, 3]`` the pixels the renders should match.
        mask: ``[B, H, W, 1]`` the object's mask (alpha), when known.
    """

    cameras: Cameras
    height: int
    width: int
    target: Float[Tensor, "B H W 3"] | None = None
    mask: Float[Tensor, "B H W 1"] | Bool[Tensor, "B H W 1"] | None = None


class ViewSource(nn.Module):
    """Gives the trainer its views. Subclasses implement :meth:`sample` and :meth:`preview_cameras`."""

    resolution: int
    """Square size of the training renders (previews and videos default to it on CPU)."""

    def sample(self, step: int, device: torch.device) -> ViewBatch:
        """The views of training step ``step`` (random draws come from the torch RNG, which is checkpointed)."""
        raise NotImplementedError

    def preview_cameras(self, n: int, device: torch.device) -> Cameras:
        """``n`` fixed cameras around the object for previews and turntables (draws no random numbers)."""
        raise NotImplementedError

    def silhouette_cameras(self, n: int, device: torch.device) -> Cameras:
        """Views whose rendered silhouettes an isosurface should reproduce (default: the preview cameras)."""
        return self.preview_cameras(n, device)

    def param_groups(self) -> list[dict]:
        """Adam groups of trainable state (none by default)."""
        return []


class OrbitViews(ViewSource):
    """Random cameras on a sphere around the origin looking at it (DreamFusion's), at one square resolution."""

    def __init__(self, cfg: CameraSamplerConfig, resolution: int):
        super().__init__()
        self.cfg = cfg
        self.resolution = resolution

    def sample(self, step: int, device: torch.device) -> ViewBatch:
        return ViewBatch(sample_cameras(self.cfg, device), self.resolution, self.resolution)

    def preview_cameras(self, n: int, device: torch.device) -> Cameras:
        cfg = self.cfg
        return turntable_cameras(n, cfg.eval_elevation, cfg.eval_distance, cfg.eval_fovy, device=device)

    def silhouette_cameras(self, n: int, device: torch.device) -> Cameras:
        return threshold_cameras(self.cfg, n, device)
