"""Per-step cost of texturing a 100k-face mesh from a prompt (issue 14 (d)), and the share spent rasterizing.

The tiny random Stable Diffusion (``text3d.guidance.random_models``) scores the renders, so the diffusion part is
small and the mesh's cost shows. Sections: the trainer's own (render / vae_encode / unet / backward / optimizer),
plus the rasterizer's three calls (rasterize, interpolate, antialias) timed inside the render by wrapping the
module functions for this script only (:mod:`text3d.render.raster` itself is unchanged).

    PYTHONPATH=. python bench/texture_speed.py [--faces 100000] [--res 64] [--steps 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from texture_meshes import bumpy_sphere

    from text3d.config import apply_overrides
    from text3d.export.kept_mesh import KeptMesh
    from text3d.guidance.random_models import save_random_sd
    from text3d.guidance.stable_diffusion import StableDiffusionGuidance
    from text3d.profiling import SectionTimer
    from text3d.recipes import texture as recipe
    from text3d.recipes.texture import TextureConfig
    from text3d.render import raster
    from text3d.training.trainer import Trainer, TrainerConfig

    device = torch.device(args.device)
    n = int(round((args.faces / 2) ** 0.5))
    pos, faces, uv, fuv = bumpy_sphere(n, n)
    kept = KeptMesh(pos, faces, uv, fuv)
    tmp = Path(tempfile.mkdtemp(prefix="text3d-texture-speed-"))
    model = save_random_sd(tmp / "tiny-sd", size="tiny", seed=0)
    guidance = StableDiffusionGuidance.from_pretrained(str(model), device=device, local_files_only=True)
    cfg = apply_overrides(
        TextureConfig(),
        {
            "mesh": "speed",
            "prompt": "a marble bust",
            "resolution": str(args.res),
            "colour.texture_size": str(args.texture_size),
            "steps": str(args.steps + 2),
        },
    )
    text = guidance.prepare_text(cfg.prompt, cfg.negative_prompt)
    positions = torch.as_tensor(
        recipe.apply_frame(recipe.orbit_frame(pos, cfg.frame_radius), pos), dtype=torch.float32
    )
    torch.manual_seed(0)
    t0 = time.perf_counter()
    (stage,) = recipe.build_stages(
        cfg,
        positions,
        torch.as_tensor(faces),
        torch.as_tensor(kept.corner_uvs(), dtype=torch.float32),
        guidance=guidance,
        text=text,
    )
    stage.to(device)
    setup_s = time.perf_counter() - t0
    timer = SectionTimer(device)

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            with timer(name):
                return fn(*a, **k)

        return wrapper

    for name in ("rasterize", "interpolate", "antialias", "texture"):
        setattr(raster, name, timed(f"raster.{name}", getattr(raster, name)))
    trainer = Trainer(stage, tmp, TrainerConfig(progress_bar=False))
    for _ in range(2):  # warm-up
        trainer.train_step(timer)
    timer.reset()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step(timer)
    step_ms = (time.perf_counter() - t0) * 1000.0 / args.steps
    ms = {k: round(v / args.steps, 1) for k, v in sorted(timer.ms.items())}
    raster_ms = sum(
        v for k, v in ms.items() if k in ("raster.rasterize", "raster.interpolate", "raster.antialias")
    )
    print(
        json.dumps(
            {
                "faces": int(faces.shape[0]),
                "vertices": int(pos.shape[0]),
                "resolution": args.res,
                "texture_size": args.texture_size,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "setup_s": round(setup_s, 2),
                "step_ms": round(step_ms, 1),
                "sections_ms": ms,
                "rasterize_share": round(ms.get("raster.rasterize", 0.0) / step_ms, 3),
                "raster_share": round(raster_ms / step_ms, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
