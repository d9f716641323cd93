"""Per-sample speed of the NeRF field (hash grid + MLP): samples per second for the forward pass, the forward +
backward pass, and the forward + backward pass with normals in the loss (what a shaded step pays).

Settings: ``default`` is text-to-3D's coarse field (16 levels x 2 features, table 2^19, max resolution 2048,
64 samples per ray); ``fit`` is the photo fit's (table 2^17, max resolution 1024, 96 samples per ray). Points are
the stratified samples of random rays through the scene box (random origins on a sphere of radius 2.5 aimed near
the centre), so the table sees the locality of a real step. Deterministic algorithms are on, as in every CPU run.

Each measurement runs in its own subprocess with ``OMP_NUM_THREADS`` set, so thread counts do not leak, and it can
run the same measurement in several source trees, interleaved, to compare before and after a change on a machine
whose load moves (take the best of the repeats: other jobs only ever slow a run down)::

    git archive <before-commit> | tar -x -C /tmp/before
    python bench/field_bench.py --trees before=/tmp/before,after=. --threads 1,2 --repeats 3

The table gives samples/s per mode (best of the repeats) and, with two trees, the ratio last / first.
``normals`` uses the tree's default normals; trees whose field has ``NeRFFieldConfig.normals`` also get
``normals:<kind>`` rows for each kind.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = ("default", "fit")
MODES = ("forward", "forward+backward", "normals")


# ------------------------------------------------------------------------------------------------ worker side
def _field_config(setting: str):
    from text3d.recipes.fit import FitCoarseConfig
    from text3d.recipes.text_to_3d import CoarseStageConfig

    stage = CoarseStageConfig() if setting == "default" else FitCoarseConfig()
    return stage.nerf, stage.renderer.n_samples


def _points(n_samples: int, per_ray: int, bound: float, seed: int):
    import torch

    from text3d.geometry.rays import sample_rays

    g = torch.Generator().manual_seed(seed)
    n_rays = max(1, n_samples // per_ray)
    origins = torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=g), dim=-1) * 2.5
    target = (torch.rand(n_rays, 3, generator=g) - 0.5) * bound
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    t, _, _ = sample_rays(origins, dirs, bound, per_ray, perturb=True, generator=g)
    return (origins[:, None, :] + t[..., None] * dirs[:, None, :]).reshape(-1, 3)


def _best_time(fn, iters: int) -> float:
    fn()  # warm-up (allocator, first-call dispatch)
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def worker(setting: str, n_samples: int, iters: int) -> dict:
    import dataclasses

    import torch

    from text3d.fields.nerf import NeRFField

    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(0)
    cfg, per_ray = _field_config(setting)
    x = _points(n_samples, per_ray, cfg.bound, seed=1)
    kinds = [None]
    if any(f.name == "normals" for f in dataclasses.fields(cfg)):
        from text3d.fields.nerf import NORMAL_KINDS

        kinds = list(NORMAL_KINDS)
    results = {}
    field = NeRFField(cfg)

    def forward():
        with torch.no_grad():
            field(x)

    def forward_backward():
        field.zero_grad(set_to_none=True)
        out = field(x)
        (out.density.sum() + out.albedo.sum()).backward()

    results["forward"] = x.shape[0] / _best_time(forward, iters)
    results["forward+backward"] = x.shape[0] / _best_time(forward_backward, iters)
    for kind in kinds:
        nfield = field if kind is None else NeRFField(dataclasses.replace(cfg, normals=kind))

        def with_normals(nfield=nfield):
            nfield.zero_grad(set_to_none=True)
            out = nfield(x, with_normals=True)
            (out.density.sum() + out.albedo.sum() + out.normal.sum()).backward()

        key = "normals" if kind is None else f"normals:{kind}"
        results[key] = x.shape[0] / _best_time(with_normals, iters)
        if kind == getattr(cfg, "normals", None):
            results["normals"] = results[key]
    return {"samples": int(x.shape[0]), "samples_per_s": results}


# ------------------------------------------------------------------------------------------------ driver side
def measure(tree: Path, setting: str, threads: int, n_samples: int, iters: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", setting, "--samples", str(n_samples)]
    cmd += ["--iters", str(iters)]
    out = subprocess.run(cmd, env=env, cwd=str(tree), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker failed in {tree} ({setting}, {threads} threads):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--trees", default=".", help="NAME=PATH,... (or one PATH): source trees to compare, interleaved"
    )
    p.add_argument("--settings", default="default,fit")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--samples", type=int, default=1 << 16, help="field queries per call")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best round counts")
    p.add_argument("--iters", type=int, default=2, help="timed calls per mode in one round (best counts)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.samples, args.iters)))
        return 0
    trees = {}
    for part in args.trees.split(","):
        name, _, path = part.rpartition("=")
        trees[name or path] = Path(path).resolve()
    settings = args.settings.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    best: dict[tuple[str, str, int], dict[str, float]] = {}
    for r in range(args.repeats):
        for setting in settings:
            for n in threads:
                for name, tree in trees.items():
                    res = measure(tree, setting, n, args.samples, args.iters)["samples_per_s"]
                    slot = best.setdefault((name, setting, n), {})
                    for mode, v in res.items():
                        slot[mode] = max(slot.get(mode, 0.0), v)
        print(f"round {r + 1}/{args.repeats} done", file=sys.stderr)
    names = list(trees)
    header = "| setting | threads | mode | " + " | ".join(f"{n} samples/s" for n in names)
    header += " | ratio |" if len(names) > 1 else " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for setting in settings:
        for n in threads:
            modes = sorted(
                {m for name in names for m in best[(name, setting, n)]}, key=lambda m: (m not in MODES, m)
            )
            for mode in modes:
                vals = [best[(name, setting, n)].get(mode) for name in names]
                cells = " | ".join("–" if v is None else f"{v:,.0f}" for v in vals)
                ratio = ""
                if len(names) > 1:
                    ratio = f" | {vals[-1] / vals[0]:.2f}×" if vals[0] and vals[-1] else " | –"
                print(f"| {setting} | {n} | {mode} | {cells}{ratio} |")
    if args.json:
        rows = [
            {"tree": name, "setting": s, "threads": n, "samples": args.samples, "samples_per_s": v}
            for (name, s, n), v in best.items()
        ]
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
