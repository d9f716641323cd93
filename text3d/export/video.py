"""Turntable video of a representation: mp4 through imageio's ffmpeg, or an animated gif when no encoder is available."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from text3d.cameras import Cameras
from text3d.io import atomic_path

log = logging.getLogger(__name__)


def turntable_frames(
    representation,
    shader,
    cameras: Cameras,
    res: int,
    on_frame: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """One uint8 ``[res, res, 3]`` render per camera (a turntable: ``ViewSource.preview_cameras``), shaded with
    the shader's preview state (albedo for the diffuse shader).

    ``on_frame(i, n)`` is called before frame ``i`` (from 0); it may raise to stop (the web app's cancel).
    """
    frames = []
    n_frames = len(cameras)
    with torch.no_grad():
        for i in range(n_frames):
            if on_frame is not None:
                on_frame(i, n_frames)
            cam = cameras[i]
            rgb = representation.render(cam, res, res, shader, shader.view_state(cam), training=False).rgb[0]
            frames.append((rgb.clamp(0, 1).float().cpu().numpy() * 255 + 0.5).astype(np.uint8))
    return frames


def write_video(frames: list[np.ndarray], path: Path, fps: int = 20) -> Path:
    """Write ``path`` (``.mp4``); falls back to ``.gif`` beside it if ffmpeg is unavailable. Returns the file."""
    import imageio.v2 as imageio

    path = Path(path)
    try:
        with atomic_path(path.with_suffix(".mp4")) as tmp:
            imageio.mimwrite(
                tmp, frames, fps=fps, codec="libx264", quality=8, macro_block_size=1, format="FFMPEG"
            )
        return path.with_suffix(".mp4")
    except Exception as err:  # no ffmpeg binary or codec: keep the run going with a gif
        log.warning("mp4 encoding failed (%s); writing a gif instead", err)
        from PIL import Image

        gif = path.with_suffix(".gif")
        with atomic_path(gif) as tmp:
            imgs = [Image.fromarray(f) for f in frames]
            imgs[0].save(
                tmp, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0
            )
        return gif
