"""``text3d relight``: a turntable of a fit run's PBR asset under any environment map.

The run's materials stage is rebuilt from its config and checkpoints (like export), its light replaced by the given
``.hdr`` (or kept: the learned one), and rendered from turntable cameras round text3d's +Y axis into
``<run>/relight/<env>.mp4`` (a gif without ffmpeg) and ``<run>/relight/<env>-000.png`` (the first frame).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from text3d.cameras import turntable_cameras
from text3d.config import load_config
from text3d.data.load import load_photo_set
from text3d.errors import RunDirError
from text3d.export.video import turntable_frames, write_video
from text3d.hdr import read_environment
from text3d.recipes import fit as fit_recipe
from text3d.recipes.fit import FitConfig
from text3d.render.pbr import EnvironmentLight
from text3d.training.checkpoint import checkpoint_path, load_weights
from text3d.training.previews import save_png
from text3d.training.stage import Stage


def load_materials_stage(run_dir: str | Path, env: str | Path | None = None, device: str = "cpu") -> Stage:
    """The trained ``materials`` stage of a ``--materials pbr`` fit run, lit by ``env`` (default: its own light).

    Raises:
        RunDirError: not a fit run folder, a run without materials, or materials not trained yet.
        HDRFormatError: ``env`` is missing or not a usable environment map.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir} is not a text3d run folder (no config.yaml)")
    image = read_environment(env) if env is not None else None
    cfg = load_config(run_dir / "config.yaml", FitConfig)
    if cfg.materials != "pbr":
        raise RunDirError(f"{run_dir} has no materials to relight: fit it with --materials pbr")
    if not checkpoint_path(run_dir, "materials").is_file():
        raise RunDirError(f"{run_dir}: the materials stage has not been trained yet (no checkpoint)")
    photos = load_photo_set(cfg.data, bound=cfg.bound, margin=cfg.margin, holdout=cfg.holdout)
    torch.manual_seed(cfg.seed)
    stage = fit_recipe.build_stages(cfg, photos)[-1]  # its checkpoint holds all it needs, the mesh included
    load_weights(stage, checkpoint_path(run_dir, stage.name))
    if image is not None:
        light = EnvironmentLight(stage.shader.environment.cfg, image, trainable=False)
        stage.shader.environment = light
    return stage.to(torch.device(device)).eval()


def relight(
    run_dir: str | Path,
    env: str | Path | None = None,
    frames: int = 24,
    resolution: int = 256,
    device: str = "cpu",
) -> Path:
    """Render the turntable; returns the video's path."""
    stage = load_materials_stage(run_dir, env, device)
    cams = turntable_cameras(frames, elevation_deg=15.0, distance=3.0, fovy_deg=40.0, device=device)
    imgs = turntable_frames(stage.representation, stage.shader, cams, resolution)
    name = Path(env).stem if env is not None else "learned"
    out = Path(run_dir) / "relight"
    save_png(out / f"{name}-000.png", np.asarray(imgs[0]))
    return write_video(imgs, out / f"{name}.mp4")
