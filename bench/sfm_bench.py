"""Unposed photos (issue 13 (d)): 40 RGBA views at 400² of a Cycles-rendered textured object (Suzanne with a
texture detailed down to a few texels, :func:`detail_texture`; 32 samples, denoised), given to ``text3d fit`` as a
plain folder of images (no poses). Structure-from-motion (pycolmap) registers what it can; the fit refines those
poses and exports a mesh in the SfM model's frame.

Measured against the render's true cameras and mesh: the fraction of images registered; the mean rotation error of
the solved poses (pycolmap's, then the fit's refined ones) after a similarity alignment of the camera centres to the
true ones (Umeyama, as ``bench/pose_bench.py``); and the exported mesh's Chamfer distance to the true mesh, as a
fraction of its bounding-box diagonal, after the same alignment. Bars: >= 90 % registered, <= 1°, <= 2 %.

Run: ``python bench/sfm_bench.py [--views 40] [--resolution 400] [--representation sdf|nerf] [--set KEY=VALUE ...]``
(from the repository root; the render is cached by scene hash, the first call spends about ten minutes in Cycles).
Appends a record to ``bench/results/sfm-<date>.json``.
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

import numpy as np
import trimesh
from fit_scenes import append_record
from pose_bench import aligned_errors
from sdf_fit_bench import SDF, mesh_accuracy


def detail_texture(size: int = 1024, seed: int = 7) -> Path:
    """A texture with detail down to a few texels (random colour blobs from 8 to 256 cells a side, equal weights):
    the fit scenes' noise texture stops at 32 cells, which at 400² leaves SIFT about 46 keypoints a view and
    pycolmap no initial pair. Written once under ``~/.cache/text3d/textures`` (deterministic in ``seed``)."""
    from PIL import Image

    path = Path.home() / ".cache" / "text3d" / "textures" / f"detail-{size}-{seed}-v2.png"
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3))
    for cells in (8, 16, 32, 64, 128, 256):
        grid = rng.random((cells + 1, cells + 1, 3))
        x = np.linspace(0, cells, size, endpoint=False)
        i, f = x.astype(int), x - x.astype(int)
        f = f * f * (3 - 2 * f)
        a = grid[i][:, i] * (1 - f)[None, :, None] + grid[i][:, i + 1] * f[None, :, None]
        b = grid[i + 1][:, i] * (1 - f)[None, :, None] + grid[i + 1][:, i + 1] * f[None, :, None]
        img += a * (1 - f)[:, None, None] + b * f[:, None, None]
    lo, hi = np.percentile(
        img, [2, 98], axis=(0, 1)
    )  # equal weights average towards grey: stretch the contrast
    img = np.clip((img - lo) / (hi - lo), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(tmp)
    tmp.replace(path)
    return path


def scene(views: int, resolution: int, samples: int):
    from text3d.scenes import TextureSpec, render_dataset, suzanne_spec

    spec = suzanne_spec(
        TextureSpec(kind="file", path=str(detail_texture())),
        subdivision=2,
        roughness=0.6,
        views=views,
        test_views=0,
        resolution=resolution,
        samples=samples,
        denoise=True,
    )
    return render_dataset(spec)


def by_stem(frames: list[dict]) -> dict[str, np.ndarray]:
    return {Path(f["file_path"]).stem: np.array(f["transform_matrix"], dtype=np.float64) for f in frames}


def main(argv: list[str]) -> int:
    from text3d.config import apply_overrides
    from text3d.data.colmap import load_colmap
    from text3d.data.frames import WorldFrame
    from text3d.data.transforms import write_transforms
    from text3d.fitting import fit
    from text3d.recipes.fit import FitConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=40)
    ap.add_argument("--resolution", type=int, default=400)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--representation", choices=("sdf", "nerf"), default="sdf")
    ap.add_argument("--steps", type=int, default=1200, help="coarse steps")
    ap.add_argument("--out", default="/tmp/text3d-sfm-bench")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    ds = scene(args.views, args.resolution, args.samples)
    t_render = time.perf_counter() - t0
    true = by_stem(json.loads((ds.path / "transforms_train.json").read_text())["frames"])
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    images = out / "photos" / "images"
    images.mkdir(parents=True)
    for png in sorted((ds.path / "train").glob("*.png")):
        shutil.copy2(png, images / png.name)  # no transforms.json: text3d fit runs SfM
    overrides = {
        **(SDF if args.representation == "sdf" else {}),
        "data": str(images.parent),
        "out_dir": str(out / "runs"),
        "device": "cpu",
        "coarse.steps": str(args.steps),
        "coarse.rays_per_step": "2048" if args.representation == "sdf" else "4096",
        "trainer.progress_bar": "false",
        "trainer.video_frames": "0",
        "export.formats": "glb",
        **dict(item.split("=", 1) for item in args.set),
    }
    cfg = apply_overrides(FitConfig(), overrides)
    t0 = time.perf_counter()
    result = fit(cfg)
    t_fit = time.perf_counter() - t0
    run = result.run_dir
    record_json = json.loads((run / "run.json").read_text())
    sfm = record_json["data"]["meta"]["sfm"]

    solved = load_colmap(run / "sfm" / "sparse" / "0", images_dir=images)  # pycolmap's poses, unrefined
    tmp = out / "sfm-transforms.json"
    write_transforms(tmp, solved, placement="input")
    sfm_errors, _, _ = aligned_errors(by_stem(json.loads(tmp.read_text())["frames"]), true)
    fitted = by_stem(json.loads((run / "transforms.json").read_text())["frames"])
    fit_errors, _, (s, r, t) = aligned_errors(fitted, true)

    mesh = trimesh.load(next(p for p in result.meshes if p.suffix == ".glb"), force="mesh")
    frame = WorldFrame.from_dict(record_json["data"]["frame"])
    mesh.apply_transform(np.linalg.inv(frame.to_file_matrix))  # the file's axes -> the SfM model's world
    similarity = np.eye(4)
    similarity[:3, :3], similarity[:3, 3] = s * r, t
    mesh.apply_transform(similarity)  # -> the true (Blender) world
    true_mesh = trimesh.load(ds.mesh_path, process=False)
    metrics = json.loads((run / "metrics.json").read_text())
    record = {
        "date": _dt.date.today().isoformat(),
        "scene": {"views": args.views, "resolution": args.resolution, "samples": args.samples},
        "registered": sfm["registered"],
        "registered_fraction": round(sfm["registered"] / args.views, 3),
        "unregistered": sfm["unregistered"],
        "sfm_points": sfm["points"],
        "rotation_error_sfm_deg": {
            "mean": round(float(np.mean(sfm_errors)), 3),
            "max": round(max(sfm_errors), 3),
        },
        "rotation_error_fit_deg": {
            "mean": round(float(np.mean(fit_errors)), 3),
            "max": round(max(fit_errors), 3),
        },
        **mesh_accuracy(mesh, true_mesh),
        "held_out_psnr": metrics["psnr"],
        "held_out_ssim": metrics["ssim"],
        "representation": args.representation,
        "fit_seconds": round(t_fit, 1),
        "render_seconds": round(t_render, 1),
        "render_cached": ds.cached,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "overrides": {k: v for k, v in overrides.items() if k not in ("data", "out_dir")},
        "run_dir": str(run),
    }
    append_record("sfm", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
