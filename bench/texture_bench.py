"""Texture from photos, exact (issue 14 (a)): a bumpy sphere with its own UVs and a known smooth-noise texture,
rendered *unlit* (emission) by Blender Cycles from 24 training and 8 held-out views at 128²; ``text3d texture
--images`` recovers the texture. Prints the held-out PSNR (text3d's render vs Cycles') and the recovered texture's
PSNR against the true one on the texels the training views cover.

    PYTHONPATH=. python bench/texture_bench.py [--steps N] [--colour texture|field] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def run(steps: int, colour: str, size: int, out: Path, extra: dict | None = None) -> dict:
    from texture_meshes import covered_texels, emission_scene

    from text3d.config import apply_overrides
    from text3d.metrics import psnr
    from text3d.recipes.texture import TextureConfig
    from text3d.texturing import texture

    data, obj, truth = emission_scene(size)
    cfg = apply_overrides(
        TextureConfig(),
        {
            "mesh": str(obj),
            "images": str(data.path),
            "steps": str(steps),
            "device": "cpu",
            "out_dir": str(out),
            "colour.colour": colour,
            "colour.texture_size": "256",
            "export.texture_size": "256",
            "views.images_per_step": "2",
            "trainer.progress_bar": "false",
            "trainer.video_frames": "4",
            "trainer.preview_every": "100000",
            "trainer.checkpoint_every": "100000",
            "trainer.log_every": "50",
            **(extra or {}),
        },
    )
    t0 = time.perf_counter()
    result = texture(cfg)
    seconds = time.perf_counter() - t0
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    from PIL import Image

    from text3d.texturing import load_kept

    png = next((result.run_dir / "mesh").glob("*_albedo.png"))
    got = np.asarray(Image.open(png).convert("RGB"), np.float32) / 255.0
    from text3d.data.load import load_photo_set
    from text3d.recipes import texture as recipe

    photos = load_photo_set(data.path, bound=cfg.bound, margin=cfg.margin, holdout=cfg.holdout)
    kept = load_kept(result.run_dir / "input_mesh.npz")
    stages = recipe.build_stages(
        cfg,
        torch.as_tensor(recipe.apply_frame(recipe.photo_frame(photos), kept.positions), dtype=torch.float32),
        torch.as_tensor(kept.faces),
        torch.as_tensor(kept.corner_uvs(), dtype=torch.float32),
        photos=photos,
    )
    cover = covered_texels(stages[0], got.shape[0])
    true = truth.astype(np.float32) / 255.0
    tex_psnr = psnr(torch.from_numpy(got[cover]), torch.from_numpy(true[cover]))
    return {
        "colour": colour,
        "steps": steps,
        "seconds": round(seconds, 1),
        "held_out_psnr": metrics["psnr"],
        "held_out_views": metrics["views"],
        "texture_psnr_covered": round(tex_psnr, 2),
        "covered_fraction": round(float(cover.mean()), 3),
        "run_dir": str(result.run_dir),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--colour", default="texture")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "text3d-texture-bench" / "runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any TextureConfig field")
    args = ap.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    print(json.dumps({**run(args.steps, args.colour, args.size, args.out, extra), "set": extra}))


if __name__ == "__main__":
    main()
