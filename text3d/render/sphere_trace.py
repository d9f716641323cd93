"""Sphere tracing of signed distance fields, with exact gradients at the hit point and a differentiable silhouette.

**The march** (:func:`sphere_trace`) runs without gradients: each ray starts where it enters the scene box
(:func:`text3d.geometry.rays.ray_aabb`, the coarse empty-space bound: rays that miss the box cost nothing and the
march never starts in front of it) and steps forward by ``step_scale * f`` until ``|f| < hit_eps`` (a hit), it
leaves the box (a miss) or ``max_steps`` run out (a miss). Only the rays still marching are evaluated at each step.
A ray that overshoots (``f < 0``, which an inexact learned SDF allows) is bisected between its last two iterates;
hits then take ``newton_steps`` Newton steps along the ray.

**The hit point** is made differentiable by implicit differentiation (IDR, Yariv et al. 2020; DVR): with ``x0`` the
converged point, ``g = grad_x f(x0)`` and ``d`` the ray direction,

    x = x0 - d * f(x0; theta) / (g . d)        (g . d detached)

has the value of one more Newton step and the exact first-order gradient ``dt/dtheta = -(df/dtheta) / (g . d)``,
also with respect to the ray's origin and direction (camera poses). Normals are ``grad_x f`` at ``x`` by autograd
(with ``create_graph`` when training, so shading passes gradients to the geometry through the normals too).

**Silhouettes.** The hit mask is a step function of the parameters: without more, the pixels along the outline
pass no gradient and a shape fitted to masks never changes its outline. Both forms here use ``m``, the minimum of
``f`` along the ray (negative for rays that hit), found by a short search without gradients (around the march's
closest iterate for a miss, on samples behind the hit point for a hit); ``m`` itself is then evaluated with
gradients at its argmin, whose derivative is exactly ``df/dtheta`` there (Danskin):

- ``idr``: opacity ``sigmoid(-alpha * m)`` for every ray (IDR's mask term used as the coverage): a soft outline
  about ``1 / alpha`` wide in the forward image too;
- ``band``: the forward coverage stays the exact hit mask, and rays in the band ``|m| < band_eps`` add
  ``c - c.detach()`` with ``c = -m / (2 band_eps)``: zero in value, and its gradient is the boundary integral of the
  silhouette's motion spread over a band of near-grazing rays (Wang, Deng, Zhang, Jakob, Marschner 2024);
- ``none``: the hard hit mask (for comparison: no outline gradient).

Rays with coverage take the shaded colour at their hit point (or, missing, at their closest point) composited over
the background: ``rgb = bg + opacity * (colour - bg)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from text3d.cameras import Cameras
from text3d.geometry.rays import ray_aabb
from text3d.views import RenderOutput

SILHOUETTE_KINDS = ("band", "idr", "none")


@dataclass(frozen=True)
class SphereTraceConfig:
    max_steps: int = 64
    """March steps at most; a ray still marching after them counts as a miss."""
    hit_eps: float = 1e-3
    """A ray has hit where ``|f| < hit_eps`` (world units); Newton steps then refine the point."""
    step_scale: float = 1.0
    """Fraction of ``f`` stepped; below 1 for learned fields whose ``|grad f|`` drifts below 1."""
    newton_steps: int = 1
    """Newton steps along the ray after the march (the differentiable hit point adds one more in value)."""
    bisect_steps: int = 12
    """Bisection steps for rays that stepped past the surface (``f < 0``)."""
    min_cos: float = 0.02
    """``|grad f . d|`` is kept above this in the implicit formula's denominator (grazing hits)."""
    silhouette: str = "band"
    """Differentiable outline: ``band`` (default: exact forward mask, band gradient), ``idr`` (soft opacity
    ``sigmoid(-alpha * min f)``) or ``none`` (hard mask, no outline gradient). See the module docstring."""
    idr_alpha: float = 50.0
    """Sharpness of the ``idr`` opacity (IDR starts at 50 and doubles it during training)."""
    band_eps: float = 0.02
    """Half-width of the ``band`` form's band of near-grazing rays, in SDF units (world units)."""
    interior_samples: int = 8
    """Samples behind a hit point when looking for the ray's minimum (denser near the hit)."""
    search_samples: int = 8
    search_rounds: int = 2
    """Local refinement of a ray's minimum: ``search_rounds`` rounds of ``search_samples`` samples."""

    def reach(self) -> float:
        """Largest ``min f`` of a miss that can still have coverage (or an outline gradient)."""
        if self.silhouette == "idr":
            return 15.0 / self.idr_alpha  # sigmoid(-15) = 3e-7
        if self.silhouette == "band":
            return self.band_eps
        return 0.0


def check_config(cfg: SphereTraceConfig) -> None:
    if cfg.silhouette not in SILHOUETTE_KINDS:
        raise ValueError(f"silhouette must be one of {', '.join(SILHOUETTE_KINDS)}; got {cfg.silhouette!r}")


@dataclass
class TraceResult:
    """What the march found, per ray (no gradients).

    Attributes:
        hit: the ray reached the surface.
        t: distance of the hit (meaningful where ``hit``).
        t_min, f_min: argmin and minimum of ``f`` along the ray, where searched (``f_min = inf`` elsewhere).
        evals: field evaluations made (points), for benchmarks.
        steps: march iterations run.
    """

    hit: Bool[Tensor, "R"]
    t: Float[Tensor, "R"]
    t_min: Float[Tensor, "R"]
    f_min: Float[Tensor, "R"]
    evals: int
    steps: int


def _at(o: Tensor, d: Tensor, t: Tensor) -> Tensor:
    return o + t[..., None] * d


def _local_min(sdf, o, d, lo, hi, samples: int, rounds: int) -> tuple[Tensor, Tensor, int]:
    """Grid search of ``f`` on ``[lo, hi]`` per ray, ``rounds`` times around the best sample."""
    evals = 0
    u = torch.linspace(0.0, 1.0, samples, device=o.device, dtype=o.dtype)
    best_t = best_f = None
    for _ in range(rounds):
        ts = lo[:, None] + (hi - lo)[:, None] * u  # [N, S]
        f = sdf(_at(o[:, None, :], d[:, None, :], ts).reshape(-1, 3)).reshape(ts.shape)
        evals += f.numel()
        k = f.argmin(dim=1, keepdim=True)
        t_k, f_k = ts.gather(1, k)[:, 0], f.gather(1, k)[:, 0]
        if best_t is None:
            best_t, best_f = t_k, f_k
        else:
            better = f_k < best_f
            best_t, best_f = torch.where(better, t_k, best_t), torch.where(better, f_k, best_f)
        step = (hi - lo) / max(samples - 1, 1)
        lo, hi = best_t - step, best_t + step
    return best_t, best_f, evals


@torch.no_grad()
def sphere_trace(
    sdf,
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    bound: float,
    cfg: SphereTraceConfig = SphereTraceConfig(),
    search_min: bool = False,
) -> TraceResult:
    """March unit-direction rays through ``sdf`` (``[N, 3] -> [N]``, negative inside) inside
    ``[-bound, bound]^3``; with ``search_min``, also find each relevant ray's minimum of ``f`` (see the module
    docstring). No gradients."""
    o, d = origins.detach(), dirs.detach()
    n = o.shape[0]
    near, far = ray_aabb(o, d, bound)
    in_box = far > near
    t = near.clone()
    t_prev = near.clone()  # the last iterate with f > 0
    hit = torch.zeros(n, dtype=torch.bool, device=o.device)
    over = torch.zeros_like(hit)
    f_best = torch.full_like(t, float("inf"))
    t_best, back = near.clone(), torch.zeros_like(t)
    idx = in_box.nonzero()[:, 0]
    evals = steps = 0
    for _ in range(cfg.max_steps):
        if idx.numel() == 0:
            break
        steps += 1
        ti = t[idx]
        f = sdf(_at(o[idx], d[idx], ti))
        evals += idx.numel()
        better = f < f_best[idx]
        ib = idx[better]
        f_best[ib], t_best[ib], back[ib] = f[better], ti[better], ti[better] - t_prev[ib]
        close = f.abs() < cfg.hit_eps
        neg = f <= -cfg.hit_eps
        stop = close | neg
        hit[idx[stop]] = True
        over[idx[neg]] = True
        pos = f > 0
        t_prev[idx[pos]] = ti[pos]
        t_next = ti + cfg.step_scale * f
        t[idx] = torch.where(stop, ti, t_next)
        idx = idx[~stop & (t_next < far[idx])]

    # Overshoots: bisect between the last point outside and the first inside.
    ov = over.nonzero()[:, 0]
    if ov.numel():
        lo, hi = t_prev[ov], t[ov]
        for _ in range(cfg.bisect_steps):
            mid = 0.5 * (lo + hi)
            outside = sdf(_at(o[ov], d[ov], mid)) > 0
            evals += ov.numel()
            lo, hi = torch.where(outside, mid, lo), torch.where(outside, hi, mid)
        t[ov] = 0.5 * (lo + hi)

    # Newton along the ray: t <- t - f / (grad f . d), at most 4 |f| per step (grazing rays).
    hi_idx = hit.nonzero()[:, 0]
    for _ in range(cfg.newton_steps if hi_idx.numel() else 0):
        f, g = sdf_and_grad(sdf, _at(o[hi_idx], d[hi_idx], t[hi_idx]))
        evals += hi_idx.numel()
        gd = (g * d[hi_idx]).sum(-1)
        t[hi_idx] = t[hi_idx] - f / torch.where(gd < -0.25, gd, torch.full_like(gd, -0.25))

    t_min, f_min = t_best.clone(), torch.full_like(t, float("inf"))
    reach = cfg.reach()
    if search_min and reach > 0:
        # Misses that came close: search between the iterates around the closest one.
        mi = (in_box & ~hit & (f_best < reach)).nonzero()[:, 0]
        if mi.numel():
            lo = torch.maximum(t_best[mi] - back[mi], near[mi])
            hi = torch.minimum(t_best[mi] + cfg.step_scale * f_best[mi], far[mi])
            tm, fm, e = _local_min(sdf, o[mi], d[mi], lo, hi, cfg.search_samples, cfg.search_rounds)
            evals += e
            keep = fm < f_best[mi]
            t_min[mi] = torch.where(keep, tm, t_best[mi])
            f_min[mi] = torch.where(keep, fm, f_best[mi])
        # Hits: samples behind the hit point (quadratically spaced, dense near it), then the local search.
        if hi_idx.numel():
            th = t[hi_idx]
            depth = torch.clamp(far[hi_idx] - th, min=0.0).clamp(max=4.0 * reach)
            k = cfg.interior_samples
            u = ((torch.arange(k + 1, device=o.device, dtype=o.dtype)) / k) ** 2  # includes the hit itself
            ts = th[:, None] + depth[:, None] * u
            f = sdf(_at(o[hi_idx, None, :], d[hi_idx, None, :], ts).reshape(-1, 3)).reshape(ts.shape)
            evals += f.numel()
            j = f.argmin(dim=1)
            tj = ts.gather(1, j[:, None])[:, 0]
            fj = f.gather(1, j[:, None])[:, 0]
            t_min[hi_idx], f_min[hi_idx] = tj, fj
            # refine only where the minimum can matter: deeper than -reach, the ray is simply covered
            shallow = fj > -reach
            si = hi_idx[shallow]
            if si.numel():
                js = j[shallow]
                lo = ts[shallow].gather(1, (js - 1).clamp(min=0)[:, None])[:, 0]  # the neighbouring samples
                hi = ts[shallow].gather(1, (js + 1).clamp(max=k)[:, None])[:, 0]
                tm, fm, e = _local_min(sdf, o[si], d[si], lo, hi, cfg.search_samples, cfg.search_rounds)
                evals += e
                keep = fm < fj[shallow]
                t_min[si] = torch.where(keep, tm, tj[shallow])
                f_min[si] = torch.where(keep, fm, fj[shallow])
    return TraceResult(hit=hit, t=t, t_min=t_min, f_min=f_min, evals=evals, steps=steps)


def sdf_and_grad(sdf, x: Float[Tensor, "N 3"]) -> tuple[Float[Tensor, "N"], Float[Tensor, "N 3"]]:
    """``f(x)`` and ``grad_x f(x)``, both detached (autograd, also inside ``no_grad``)."""
    with torch.enable_grad():
        xl = x.detach().requires_grad_(True)
        f = sdf(xl)
        (g,) = torch.autograd.grad(f.sum(), xl)
    return f.detach(), g


def _field_at(field: nn.Module, x: Tensor, need_grad: bool, create_graph: bool):
    """``(f, albedo, grad f)`` at ``x``; ``grad f`` is None unless ``need_grad``. With gradients off globally the
    results are detached (previews); otherwise ``grad f`` is differentiable when ``create_graph``."""
    if not need_grad:
        f, albedo = field(x)
        return f, albedo, None
    if not torch.is_grad_enabled():
        with torch.enable_grad():
            xl = x.detach().requires_grad_(True)
            f, albedo = field(xl)
            (g,) = torch.autograd.grad(f.sum(), xl)
        return f.detach(), albedo.detach(), g
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    f, albedo = field(x)
    (g,) = torch.autograd.grad(f.sum(), x, create_graph=create_graph, retain_graph=True)
    return f, albedo, g


def implicit_hit(
    sdf,
    origins: Float[Tensor, "N 3"],
    dirs: Float[Tensor, "N 3"],
    t0: Float[Tensor, "N"],
    min_cos: float = 0.0,
) -> tuple[Float[Tensor, "N 3"], Float[Tensor, "N"]]:
    """The differentiable hit point ``x = x0 - d f(x0) / (grad f(x0) . d)`` and its distance ``t`` (see the module
    docstring), from converged distances ``t0`` (detached). One field evaluation with gradients."""
    t0 = t0.detach()
    x0 = origins + t0[:, None] * dirs  # carries gradients to the ray (poses) if it has them
    xs = x0.detach().requires_grad_(True)
    with torch.enable_grad():
        f0 = sdf(xs + (x0 - x0.detach()))
        (g,) = torch.autograd.grad(f0.sum(), xs, retain_graph=torch.is_grad_enabled())
    gd = (g * dirs.detach()).sum(-1)
    if min_cos > 0:
        gd = torch.where(gd < -min_cos, gd, torch.full_like(gd, -min_cos))
    if not torch.is_grad_enabled():
        f0 = f0.detach()
    t = t0 - f0 / gd
    return origins + t[:, None] * dirs, t


@dataclass
class RayOutput:
    """Per-ray results of :func:`trace_rays`. ``normal`` is None when not asked for."""

    rgb: Float[Tensor, "R 3"]
    opacity: Float[Tensor, "R 1"]
    depth: Float[Tensor, "R 1"]
    normal: Float[Tensor, "R 3"] | None
    hit: Bool[Tensor, "R"]
    points: Float[Tensor, "H 3"]
    """The differentiable hit points of the rays that hit, in ray order."""
    trace: TraceResult


def trace_rays(
    field: nn.Module,
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    background: Float[Tensor, "R 3"],
    shader,
    shading,
    camera_index: Int[Tensor, "R"],
    bound: float,
    cfg: SphereTraceConfig = SphereTraceConfig(),
    need_normals: bool = True,
    create_graph: bool = False,
) -> RayOutput:
    """Sphere-trace, shade and composite rays (unit ``dirs``). ``field`` has ``sdf(x)`` and ``forward(x) ->
    (sdf, albedo)`` (:mod:`text3d.fields.sdf`); ``shader(shading, albedo, normal, points, camera_index)`` colours
    surface points. Differentiable w.r.t. the field, the background and the rays (see the module docstring)."""
    check_config(cfg)
    silhouette = cfg.silhouette != "none"
    tr = sphere_trace(field.sdf, origins, dirs, bound, cfg, search_min=silhouette)
    n = origins.shape[0]
    dt = background.dtype
    hit_idx = tr.hit.nonzero()[:, 0]
    # the points whose colour the image shows: hits, and (silhouette forms) the closest points of near misses
    near_idx = (~tr.hit & (tr.f_min < cfg.reach())).nonzero()[:, 0] if silhouette else hit_idx[:0]

    x_hit, t_hit = implicit_hit(field.sdf, origins[hit_idx], dirs[hit_idx], tr.t[hit_idx], cfg.min_cos)
    x_near = origins[near_idx] + tr.t_min[near_idx, None].to(dt) * dirs[near_idx]
    points = torch.cat([x_hit, x_near])
    shade_idx = torch.cat([hit_idx, near_idx])
    f_pts, albedo, grad = _field_at(field, points, need_normals, create_graph)
    normal = None
    if grad is not None:
        normal = grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    colour = shader(shading, albedo, normal, points, camera_index[shade_idx])

    surface = torch.zeros(n, 3, dtype=dt, device=origins.device).index_put((shade_idx,), colour.to(dt))
    hard = tr.hit.to(dt)[:, None]
    if not silhouette:
        opacity = hard
    else:
        m_idx = (torch.isfinite(tr.f_min)).nonzero()[:, 0]
        x_m = origins[m_idx] + tr.t_min[m_idx, None].to(dt) * dirs[m_idx]
        m = torch.zeros(n, dtype=dt, device=origins.device).index_put((m_idx,), field.sdf(x_m).to(dt))
        has_m = torch.isfinite(tr.f_min)
        if cfg.silhouette == "idr":
            soft = torch.where(has_m, torch.sigmoid(-cfg.idr_alpha * m), torch.zeros_like(m))
            opacity = soft[:, None]
        else:
            band = has_m & (tr.f_min.abs() < cfg.band_eps)
            c = torch.where(band, -m / (2.0 * cfg.band_eps), torch.zeros_like(m))
            opacity = hard + (c - c.detach())[:, None]
    rgb = background + opacity * (surface - background)
    depth = torch.zeros(n, 1, dtype=dt, device=origins.device).index_put((hit_idx,), t_hit.to(dt)[:, None])
    normal_img = None
    if normal is not None:
        normal_img = torch.zeros(n, 3, dtype=dt, device=origins.device).index_put(
            (hit_idx,), normal[: hit_idx.numel()].to(dt)
        )
    del f_pts
    return RayOutput(rgb, opacity, depth, normal_img, tr.hit, x_hit, tr)


def camera_rays(cameras: Cameras, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Flattened ``origins [R, 3]``, unit ``dirs [R, 3]`` and ``camera_index [R]`` of the cameras' pixels
    (``R = B * H * W``, top row first)."""
    origins, dirs = cameras.rays(height, width)
    cam_idx = torch.arange(len(cameras), device=dirs.device).repeat_interleave(height * width)
    return origins.reshape(-1, 3), dirs.reshape(-1, 3), cam_idx


def render_sdf(
    field: nn.Module,
    background: nn.Module,
    cameras: Cameras,
    height: int,
    width: int,
    shader,
    shading,
    bound: float,
    cfg: SphereTraceConfig = SphereTraceConfig(),
    with_normals: bool | None = None,
    create_graph: bool = False,
) -> tuple[RenderOutput, RayOutput]:
    """``[B, H, W, *]`` sphere-traced images of the cameras (top row first), and the per-ray results behind them.
    ``with_normals`` defaults to what the shading needs; ``create_graph`` makes normals differentiable."""
    b = len(cameras)
    origins, dirs, cam_idx = camera_rays(cameras, height, width)
    need = shading.needs_normals if with_normals is None else with_normals
    rays = trace_rays(
        field,
        origins,
        dirs,
        background(dirs),
        shader,
        shading,
        cam_idx,
        bound,
        cfg,
        need_normals=need,
        create_graph=create_graph and need,
    )

    def img(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.reshape(b, height, width, -1)

    out = RenderOutput(
        rgb=img(rays.rgb), opacity=img(rays.opacity), depth=img(rays.depth), normal=img(rays.normal)
    )
    return out, rays
