"""Preview images of a stage: its albedo turntable over a geometry view. They draw no random numbers, so writing a
preview never changes the training trajectory (or exact resume)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from text3d.cameras import Cameras
from text3d.io import atomic_path
from text3d.training.checkpoint import device_of
from text3d.training.stage import Stage


def depth_shading(depth: Tensor, opacity: Tensor, cameras: Cameras) -> Tensor:
    """``[B, H, W, 3]`` grey headlight shading from screen-space normals of the depth map.

    Shows the geometry without the 4 extra field queries per sample that density-gradient normals cost.
    """
    b, h, w, _ = depth.shape
    origins, dirs = cameras.rays(h, w)
    pts = origins + dirs * depth
    dx = torch.zeros_like(pts)
    dy = torch.zeros_like(pts)
    dx[:, :, 1:-1] = pts[:, :, 2:] - pts[:, :, :-2]
    dy[:, 1:-1] = pts[:, :-2] - pts[:, 2:]
    normal = torch.nn.functional.normalize(torch.cross(dx, dy, dim=-1), dim=-1)
    lambert = (normal * -dirs).sum(-1, keepdim=True).abs()
    grey = (0.15 + 0.85 * lambert) * opacity + (1.0 - opacity)
    return grey.expand(b, h, w, 3)


def shaded_views(stage: Stage, n: int, res: int) -> np.ndarray:
    """``[2*res, n*res, 3]`` uint8: albedo turntable on top, geometry (depth-normal shading) below."""
    cams = stage.views.preview_cameras(n, device_of(stage))
    with torch.no_grad():
        out = stage.representation.render(
            cams, res, res, stage.shader, stage.shader.preview(), training=False
        )
        geometry = depth_shading(out.depth / out.opacity.clamp(min=1e-6), out.opacity.clamp(0, 1), cams)
    rows = [torch.cat(list(img), dim=1) for img in (out.rgb, geometry)]  # each [res, n*res, 3]
    img = torch.cat(rows, dim=0).clamp(0, 1)
    return (img.float().cpu().numpy() * 255 + 0.5).astype(np.uint8)


def auto_size(value: int, gpu_value: int, cpu_value: int, device: torch.device) -> int:
    """``value`` unless it is 0 ("auto"): then the GPU or the CPU figure, by where the stage runs."""
    if value:
        return value
    return gpu_value if device.type != "cpu" else cpu_value


def save_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path
