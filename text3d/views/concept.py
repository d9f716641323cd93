"""One concept image seen from a known camera, mixed into random orbit cameras (``text3d texture --image``).

Every ``every``-th step is the concept view, with the image as its target; the other steps are orbit cameras with
no target (scored by SDS), so the sides the image cannot show are still filled in. Which step is which depends on
the step number only, so a resumed run sees the same sequence.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from text3d.cameras import Cameras, CameraSamplerConfig
from text3d.views import OrbitViews, ViewBatch


class ConceptViews(OrbitViews):
    """Args:
    cfg, resolution: the orbit cameras (as :class:`OrbitViews`) and the square render size.
    camera: the one camera the concept image was taken from.
    image: ``[H, W, 3]`` the concept image in [0, 1] (``H = W = resolution``), over the render's background.
    every: the concept view's period in steps (2: every other step).
    """

    def __init__(
        self,
        cfg: CameraSamplerConfig,
        resolution: int,
        camera: Cameras,
        image: Float[Tensor, "H W 3"],
        every: int = 2,
    ):
        super().__init__(cfg, resolution)
        if image.shape[:2] != (resolution, resolution):
            raise ValueError(
                f"the concept image must be {resolution}x{resolution}, got {tuple(image.shape[:2])}"
            )
        self.every = max(1, int(every))
        self.concept_camera = camera
        self.register_buffer("image", image[None].contiguous(), persistent=False)

    def sample(self, step: int, device: torch.device) -> ViewBatch:
        if step % self.every == 0:
            cams = self.concept_camera.to(device)
            return ViewBatch(cams, self.resolution, self.resolution, target=self.image.to(device))
        return super().sample(step, device)

    def concept(self, device: torch.device) -> tuple[Cameras, Tensor]:
        """The concept camera and image ``[1, H, W, 3]`` (for checking the result against it)."""
        return self.concept_camera.to(device), self.image.to(device)
