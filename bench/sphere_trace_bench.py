"""Sphere-tracer speed on this machine: rays per second and field evaluations per ray.

For an analytic sphere and for the SDF representation's hash-grid field (the default, full-size config, at its
initial sphere), at a few resolutions: a preview render (no gradients; normals by a local autograd) and a training
render (forward + backward through the implicit hit points, normals with ``create_graph``, the band silhouette).
``--no-box`` marches from the camera through a box too large to bound anything (``bound = 50``), to show what the
coarse ``ray_aabb`` bound saves: rays that miss the scene box cost no evaluation at all.

Run ``OMP_NUM_THREADS=1 python bench/sphere_trace_bench.py [--res 64,128] [--batch 4] [--repeat 3]``; it prints one
line per case and writes nothing.
"""

from __future__ import annotations

import argparse
import time

import torch

from text3d.cameras import turntable_cameras
from text3d.fields.nerf import Background, BackgroundConfig
from text3d.fields.sdf import SDFField, SDFFieldConfig, SphereSDF
from text3d.render.shading import DiffuseShader, ShadingMode, ShadingParams
from text3d.render.sphere_trace import SphereTraceConfig, render_sdf


def run_case(
    field, res: int, batch: int, train: bool, bound: float, repeat: int
) -> tuple[float, float, float]:
    cams = turntable_cameras(batch, elevation_deg=15.0, distance=2.5, fovy_deg=40.0)
    shader, bg = DiffuseShader(), Background(BackgroundConfig(kind="solid"))
    lit = ShadingParams(ShadingMode.LAMBERTIAN, cams.positions * 1.2)
    cfg = SphereTraceConfig()
    best, evals, hits = float("inf"), 0.0, 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        if train:
            out, rays = render_sdf(field, bg, cams, res, res, shader, lit, bound, cfg, create_graph=True)
            out.rgb.mean().backward()
        else:
            with torch.no_grad():
                out, rays = render_sdf(field, bg, cams, res, res, shader, lit, bound, cfg)
        best = min(best, time.perf_counter() - t0)
        n = batch * res * res
        evals, hits = rays.trace.evals / n, float(rays.hit.float().mean())
    return batch * res * res / best, evals, hits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", default="64,128")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-box", action="store_true", help="also march with a box that bounds nothing")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    fields = {"analytic sphere": SphereSDF(radius=0.5), "hash-grid SDF": SDFField(SDFFieldConfig())}
    bounds = [1.0, 50.0] if args.no_box else [1.0]
    for name, field in fields.items():
        for res in (int(r) for r in args.res.split(",")):
            for bound in bounds:
                for train in (False, True):
                    rate, evals, hits = run_case(field, res, args.batch, train, bound, args.repeat)
                    kind = "train (fwd+bwd)" if train else "preview        "
                    print(
                        f"{name:>15} {args.batch}x{res}^2 {kind} bound {bound:>4}: {rate:>10,.0f} rays/s, "
                        f"{evals:5.1f} evals/ray, {hits:.0%} hit",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
