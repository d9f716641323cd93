"""Fit accuracy at benchmark size (issue 13 (b)): a Cycles-rendered textured object with fine detail, 100 training and
20 held-out views at 200², fitted with the default (``quality``) settings; prints held-out PSNR and SSIM, the
exported mesh's Chamfer distance to the true mesh (as a fraction of its bounding-box diagonal, in the input's
frame), wall time and peak memory, and appends a record to ``bench/results/fit-<date>.json``.

Run: ``python bench/fit_bench.py [--device cpu|cuda] [--views 100] [--resolution 200] [--set KEY=VALUE ...]``.
The render is cached by scene hash (``~/.cache/text3d/scenes``); the first call spends a few minutes in Cycles.

Tuning the mesh stage without paying for the NeRF again: run once with ``--set trainer.keep_earlier_stages=true``,
then ``--reuse-coarse RUN_DIR`` starts a new run folder from that run's finished coarse stage (its checkpoint and
turntable are copied; the coarse settings must be the same) and trains only what follows. The record says so.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import trimesh
from fit_scenes import append_record, benchmark_scene
from sdf_fit_bench import mesh_accuracy


def main(argv: list[str]) -> int:
    from text3d.config import apply_overrides, load_config
    from text3d.data import Z_UP_TO_Y_UP
    from text3d.fitting import fit
    from text3d.recipes.fit import FitConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--views", type=int, default=100)
    ap.add_argument("--test-views", type=int, default=20)
    ap.add_argument("--resolution", type=int, default=200)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--out", default="/tmp/text3d-fit-bench")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--reuse-coarse", default="", metavar="RUN_DIR", help="start from this run's coarse stage"
    )
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    ds = benchmark_scene(args.views, args.test_views, args.resolution, args.samples)
    t_render = time.perf_counter() - t0
    overrides = {
        "data": str(ds.path),
        "out_dir": args.out,
        "device": args.device,
        "trainer.progress_bar": "false",
    }
    overrides.update(dict(item.split("=", 1) for item in args.set))
    cfg = apply_overrides(FitConfig(), overrides)
    run_dir = None
    if args.reuse_coarse:
        run_dir = reuse_coarse(Path(args.reuse_coarse), Path(args.out))
    t0 = time.perf_counter()
    result = fit(cfg, run_dir=run_dir)
    t_fit = time.perf_counter() - t0
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    glb = next(p for p in result.meshes if p.suffix == ".glb")
    fitted = trimesh.load(glb, force="mesh")
    true = trimesh.load(ds.mesh_path, process=False)
    true.apply_transform(Z_UP_TO_Y_UP)
    resolved = load_config(result.run_dir / "config.yaml", FitConfig)
    record = {
        "date": _dt.date.today().isoformat(),
        "coarse_representation": resolved.coarse.representation,
        "scene": {"views": args.views, "test_views": args.test_views, "resolution": args.resolution},
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        **mesh_accuracy(fitted, true),
        "fit_seconds": round(t_fit, 1),
        "coarse_reused_from": args.reuse_coarse or None,
        "render_seconds": round(t_render, 1),
        "render_cached": ds.cached,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "device": cfg.device,
        "overrides": overrides,
        "run_dir": str(result.run_dir),
    }
    append_record("fit", record)
    return 0


def reuse_coarse(source: Path, out_dir: Path) -> Path:
    """A fresh run folder under ``out_dir`` holding ``source``'s finished coarse stage (checkpoint, turntable)."""
    ckpt = source / "checkpoints" / "coarse.safetensors"
    if not ckpt.is_file():
        raise SystemExit(
            f"{source}: no checkpoints/coarse.safetensors (run with trainer.keep_earlier_stages=true)"
        )
    run_dir = out_dir / f"reuse-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy2(ckpt, run_dir / "checkpoints" / ckpt.name)
    (run_dir / "video").mkdir()
    for video in (source / "video").glob("coarse-turntable.*"):
        shutil.copy2(video, run_dir / "video" / video.name)
    return run_dir


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
