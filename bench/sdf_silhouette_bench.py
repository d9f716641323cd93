"""Silhouette terms of the SDF renderer compared: a hash-grid SDF fitted to the masks of a torus, nothing else.

Issue 16, acceptance (d): from masks alone (no colour) the fit must recover a non-convex shape with silhouette IoU
>= 0.95 on held-out views with the mask term, and must not without it. The SDF starts as a sphere; the loss is the
mean squared error between the rendered opacity and the target mask, plus the representation's eikonal term.
The target masks are computed without the tracer: a pixel is covered when the analytic torus SDF is negative at any
of 512 samples along its ray. Held-out IoU compares the fitted SDF's sphere-traced hit mask (the forward image,
whatever the silhouette form) with the truth from other elevations and azimuths.

Run ``OMP_NUM_THREADS=1 python bench/sdf_silhouette_bench.py [--steps 300] [--modes band,idr,none]``; it prints one
line per silhouette form (IoU on training and held-out views, seconds) and writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from text3d.cameras import Cameras, make_cameras
from text3d.fields.encoding import HashGridConfig
from text3d.fields.nerf import BackgroundConfig
from text3d.fields.sdf import SDFFieldConfig, TorusSDF
from text3d.geometry.rays import ray_aabb
from text3d.render.shading import DiffuseShader
from text3d.render.sphere_trace import SphereTraceConfig, camera_rays, render_sdf
from text3d.representations.sdf import SDFConfig, SDFRepresentation


def cameras(elevations, azimuths, distance: float = 2.6, fovy: float = 40.0) -> Cameras:
    e = torch.tensor(elevations, dtype=torch.float32)
    a = torch.tensor(azimuths, dtype=torch.float32)
    return make_cameras(e, a, torch.full_like(e, distance), torch.full_like(e, fovy))


def train_cameras(n: int) -> Cameras:
    g = torch.Generator().manual_seed(1)
    elev = (torch.rand(n, generator=g) * 160.0 - 80.0).tolist()
    azim = (torch.arange(n) * (360.0 / n) + torch.rand(n, generator=g) * 20.0).tolist()
    return cameras(elev, azim)


def held_out_cameras() -> Cameras:
    return cameras([75.0, 40.0, 10.0, -35.0, -70.0, 55.0], [17.0, 131.0, 253.0, 77.0, 199.0, 311.0])


@torch.no_grad()
def true_masks(sdf, cams: Cameras, res: int, bound: float = 1.0, n: int = 512) -> torch.Tensor:
    """``[B, H, W, 1]`` coverage of an analytic SDF by dense sampling (independent of the tracer)."""
    o, d, _ = camera_rays(cams, res, res)
    near, far = ray_aabb(o, d, bound)
    u = (torch.arange(n, dtype=o.dtype) + 0.5) / n
    t = near[:, None] + (far - near).clamp(min=0)[:, None] * u
    f = torch.cat(
        [
            sdf(c.reshape(-1, 3)).reshape(c.shape[0], n)
            for c in (o[:, None] + t[..., None] * d[:, None]).split(4096)
        ]
    )
    covered = ((f < 0).any(dim=1) & (far > near)).float()
    return covered.reshape(len(cams), res, res, 1)


def rendered_masks(rep: SDFRepresentation, cams: Cameras, res: int) -> torch.Tensor:
    shader = DiffuseShader()
    cfg = dataclasses.replace(rep.cfg.tracer, silhouette="none")
    with torch.no_grad():
        out, _ = render_sdf(
            rep.field, rep.background, cams, res, res, shader, shader.preview(), rep.bound, cfg
        )
    return out.opacity


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum().clamp(min=1))


def small_sdf_config(silhouette: str, band_eps: float = 0.02, idr_alpha: float = 50.0) -> SDFConfig:
    return SDFConfig(
        field=SDFFieldConfig(
            encoding=HashGridConfig(n_levels=8, log2_hashmap_size=14, base_resolution=8, max_resolution=96),
            hidden_dim=32,
            init_radius=0.5,
        ),
        tracer=SphereTraceConfig(
            silhouette=silhouette,
            max_steps=48,
            hit_eps=2e-3,
            step_scale=0.9,
            band_eps=band_eps,
            idr_alpha=idr_alpha,
        ),
        lambda_eikonal=0.05,
        eikonal_points=1024,
    )


def fit_masks(
    silhouette: str,
    steps: int = 300,
    res: int = 32,
    views: int = 24,
    per_step: int = 2,
    lr: float = 0.02,
    seed: int = 0,
    band_eps: float = 0.02,
    idr_alpha: float = 50.0,
) -> dict:
    """Fit a fresh SDF (a sphere) to the torus's masks with one silhouette form; returns IoUs and timing."""
    torch.manual_seed(seed)
    torus = TorusSDF(major=0.5, minor=0.2)
    cams = train_cameras(views)
    targets = true_masks(torus.sdf, cams, res)
    rep = SDFRepresentation(
        small_sdf_config(silhouette, band_eps, idr_alpha),
        BackgroundConfig(kind="solid"),
        lr=lr,
        network_lr_scale=0.5,
    )
    opt = torch.optim.Adam(rep.param_groups(), betas=(0.9, 0.99), eps=1e-15)
    shader = DiffuseShader()
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        pick = torch.randperm(views, generator=g)[:per_step]
        batch = Cameras(
            cams.c2w[pick], cams.fovy[pick], cams.elevation[pick], cams.azimuth[pick], cams.distance[pick]
        )
        out = rep.render(batch, res, res, shader, shader.preview(), training=True)
        loss = ((out.opacity - targets[pick]) ** 2).mean()
        loss = loss + sum(rep.regularizers(out, step).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    held = held_out_cameras()
    return {
        "silhouette": silhouette,
        "train_iou": iou(rendered_masks(rep, cams, res), targets),
        "held_out_iou": iou(rendered_masks(rep, held, 48), true_masks(torus.sdf, held, 48)),
        "seconds": seconds,
        "steps": steps,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--modes", default="band,idr,none")
    p.add_argument("--views", type=int, default=24)
    p.add_argument("--band-eps", type=float, default=0.02)
    p.add_argument("--idr-alpha", type=float, default=50.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    for mode in args.modes.split(","):
        r = fit_masks(
            mode, args.steps, args.res, args.views, band_eps=args.band_eps, idr_alpha=args.idr_alpha
        )
        print(
            f"{r['silhouette']:>5} (band_eps {args.band_eps}, idr_alpha {args.idr_alpha}, {args.views} views, "
            f"{args.res}^2): train IoU {r['train_iou']:.4f}  held-out IoU {r['held_out_iou']:.4f}  "
            f"{r['steps']} steps in {r['seconds']:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
