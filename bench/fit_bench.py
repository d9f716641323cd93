"""Fit accuracy at benchmark size (issue 13 (b)): a Cycles-rendered textured object with fine detail, 100 training and
20 held-out views at 200², fitted with the default (``quality``) settings; prints held-out PSNR and SSIM, the
exported mesh's Chamfer distance to the true mesh (as a fraction of its bounding-box diagonal, in the input's
frame), wall time and peak memory, and appends a record to ``bench/results/fit-<date>.json``.

Run: ``python bench/fit_bench.py [--device cpu|cuda] [--views 100] [--resolution 200] [--set KEY=VALUE ...]``.
The render is cached by scene hash (``~/.cache/text3d/scenes``); the first call spends a few minutes in Cycles.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import trimesh
from fit_scenes import benchmark_scene
from scipy.spatial import cKDTree


def main(argv: list[str]) -> int:
    from text3d.config import apply_overrides
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
    t0 = time.perf_counter()
    result = fit(cfg)
    t_fit = time.perf_counter() - t0
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    glb = next(p for p in result.meshes if p.suffix == ".glb")
    fitted = trimesh.load(glb, force="mesh")
    true = trimesh.load(ds.mesh_path, process=False)
    true.apply_transform(Z_UP_TO_Y_UP)
    diag = float(np.linalg.norm(true.bounds[1] - true.bounds[0]))
    a, b = fitted.sample(100_000, seed=0), true.sample(100_000, seed=0)
    chamfer = 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()) / diag
    record = {
        "date": _dt.date.today().isoformat(),
        "scene": {"views": args.views, "test_views": args.test_views, "resolution": args.resolution},
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "chamfer_fraction_of_diagonal": round(float(chamfer), 5),
        "fit_seconds": round(t_fit, 1),
        "render_seconds": round(t_render, 1),
        "render_cached": ds.cached,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "device": cfg.device,
        "overrides": overrides,
        "run_dir": str(result.run_dir),
    }
    print(json.dumps(record, indent=1))
    out = Path("bench/results") / f"fit-{record['date']}.json"
    earlier = json.loads(out.read_text()) if out.exists() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([*earlier, record], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
