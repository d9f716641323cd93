"""SDF fit against NeRF -> DMTet fit on the same Cycles photos, measured against the true mesh (issue 16 (b)).

The scene (``--scene``, :mod:`fit_scenes`) is the fit tests' Suzanne (subdivided once, smooth, 6x6 checker, HDR sky,
RGBA masks, 40 training and 8 held-out views at 64², 16 Cycles samples) or issue 13 (b)'s benchmark scene (subdivided
twice, noise texture, 100 + 20 views at 200²), cached by its hash. Each run fits it with
``text3d.fitting.fit`` (the same call as ``text3d fit``) and measures the exported GLB (input frame) against the
true mesh (Blender's Z-up world seen Y-up, as glTF stores it): Chamfer distance as a fraction of the true mesh's
bounding-box diagonal and the mean angle between surface normals (:func:`text3d.metrics.surface_accuracy`, 100k
points on each surface; the true mesh's flat face normals), held-out PSNR / SSIM, fit time and peak memory.

Run one representation per process (peak memory is the process's):
``OMP_NUM_THREADS=1 python bench/sdf_fit_bench.py --representation sdf [--steps 600] [--set KEY=VALUE ...]``
``OMP_NUM_THREADS=1 python bench/sdf_fit_bench.py --representation nerf [--steps 600] [--refine-steps 200]``
Each prints one JSON record and appends it to ``bench/results/sdf-fit-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import resource
import sys
import time

import numpy as np
import trimesh
from fit_scenes import append_record, benchmark_scene, test_scene

SDF = {
    "coarse.representation": "sdf",
    "refine.steps": "0",
    "coarse.sdf.field.encoding.n_levels": "8",
    "coarse.sdf.field.encoding.log2_hashmap_size": "14",
    "coarse.sdf.field.encoding.max_resolution": "128",
    "coarse.sdf.field.hidden_dim": "32",
    "coarse.sdf.lambda_eikonal": "0.5",
    "coarse.sdf.eikonal_points": "512",
    "coarse.sdf.mesh_resolution": "128",
    "coarse.optim.network_lr_scale": "1.0",
}
"""The SDF fit measured here: an 8-level hash grid (2^14 entries, finest 128), MLP 32 at the grid's learning rate,
band silhouette, eikonal 0.5 on 512 box points + the step's hit points, mask weight 0.1 (the coarse default), zero
level on a 128 tet grid."""
NERF = {
    "coarse.representation": "nerf",
    "coarse.nerf.encoding.n_levels": "12",
    "coarse.nerf.encoding.log2_hashmap_size": "16",
    "coarse.nerf.encoding.max_resolution": "256",
    "coarse.nerf.hidden_dim": "32",
    "coarse.renderer.n_samples": "64",
    "coarse.optim.network_lr_scale": "1.0",
    "refine.dmtet.resolution": "128",
    "refine.images_per_step": "2",
    "export.grid_resolution": "128",
}
"""The NeRF -> DMTet fit beside it: a 12-level grid (2^16, finest 256), 64 samples per ray, then DMTet on a 128
tet grid."""


SCENES = {
    "test": "suzanne checker, 40 + 8 views at 64², Cycles 16 samples",
    "benchmark": "suzanne subdiv 2, noise texture, 100 + 20 views at 200², Cycles 64 samples",
}


def mesh_accuracy(fitted: trimesh.Trimesh, true: trimesh.Trimesh, n: int = 100_000) -> dict[str, float]:
    """Chamfer (fraction of ``true``'s bounding-box diagonal) and normal angles of two meshes in one frame."""
    from text3d.metrics import surface_accuracy

    diag = float(np.linalg.norm(true.bounds[1] - true.bounds[0]))
    pa, fa = trimesh.sample.sample_surface(fitted, n, seed=0)
    pb, fb = trimesh.sample.sample_surface(true, n, seed=1)
    acc = surface_accuracy(pa, fitted.face_normals[fa], pb, true.face_normals[fb])
    return {
        "chamfer_fraction_of_diagonal": round(acc["chamfer"] / diag, 5),
        "accuracy_fraction_of_diagonal": round(acc["accuracy"] / diag, 5),
        "completeness_fraction_of_diagonal": round(acc["completeness"] / diag, 5),
        "normal_deg": round(acc["normal_deg"], 2),
        "normal_median_deg": round(acc["normal_median_deg"], 2),
    }


def main(argv: list[str]) -> int:
    from text3d.config import apply_overrides
    from text3d.data import Z_UP_TO_Y_UP
    from text3d.fitting import fit
    from text3d.recipes.fit import FitConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--representation", choices=("sdf", "nerf"), default="sdf")
    ap.add_argument("--steps", type=int, default=600, help="coarse steps (SDF or NeRF)")
    ap.add_argument("--rays", type=int, default=2048)
    ap.add_argument("--refine-steps", type=int, default=200, help="DMTet steps after the NeRF")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="/tmp/text3d-sdf-fit-bench")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--scene",
        choices=("test", "benchmark"),
        default="test",
        help="the fit tests' 64² checker Suzanne, or issue 13 (b)'s 200² noise-textured one (100 + 20 views)",
    )
    args = ap.parse_args(argv)

    ds = test_scene() if args.scene == "test" else benchmark_scene()
    overrides = {
        **(SDF if args.representation == "sdf" else NERF),
        "data": str(ds.path),
        "out_dir": args.out,
        "device": args.device,
        "coarse.steps": str(args.steps),
        "coarse.rays_per_step": str(args.rays),
        "trainer.progress_bar": "false",
        "trainer.preview_every": "100000",
        "trainer.checkpoint_every": "100000",
        "trainer.video_frames": "0",
        "export.texture_size": "512",
        "export.formats": "glb",
    }
    if args.representation == "nerf":
        overrides["refine.steps"] = str(args.refine_steps)
    overrides.update(dict(item.split("=", 1) for item in args.set))
    cfg = apply_overrides(FitConfig(), overrides)
    t0 = time.perf_counter()
    result = fit(cfg)
    t_fit = time.perf_counter() - t0
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    glb = next(p for p in result.meshes if p.suffix == ".glb")
    fitted = trimesh.load(glb, force="mesh")
    true = trimesh.load(ds.mesh_path, process=False)
    true.apply_transform(Z_UP_TO_Y_UP)
    record = {
        "date": _dt.date.today().isoformat(),
        "representation": args.representation,
        "scene": SCENES[args.scene],
        **mesh_accuracy(fitted, true),
        "faces": len(fitted.faces),
        "watertight": _watertight(fitted),
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "fit_seconds": round(t_fit, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "overrides": {k: v for k, v in overrides.items() if k not in ("data", "out_dir")},
        "run_dir": str(result.run_dir),
    }
    append_record("sdf-fit", record)
    return 0


def _watertight(mesh: trimesh.Trimesh) -> bool:
    """Watertight once the vertices a texture atlas split along its seams are merged back."""
    m = mesh.copy()
    m.merge_vertices(merge_tex=True, merge_norm=True)
    return bool(m.is_watertight)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
