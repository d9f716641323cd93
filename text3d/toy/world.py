"""The toy world: coloured primitives on white, rendered exactly from text3d's own cameras and shaders, and
captioned with text3d's own view words.

Everything that ties the world to text3d is imported, never copied: the camera ranges and sampler
(:func:`text3d.cameras.sample_cameras`), the view labels (:func:`text3d.cameras.view_direction_ids`), the prompt
suffixes (:func:`text3d.guidance.prompts.view_prompts`) and the shading modes, light draws and shading maths
(:mod:`text3d.render.shading`). If any of those change, a retrained toy model follows them.

One object is not front-back symmetric: the crate, a cube whose front half (+Z) is yellow and back half blue, the
world's test of view words (a generation must put its yellow half on +Z).

Shapes are signed distance functions (exact for all of them), ray-cast by sphere tracing inside the bounding sphere,
with 2x2 supersampling so edges are anti-aliased like a NeRF render. All shapes are centred at the origin, Y up,
and sized like the NeRF's initial blob (radius 0.5), so a generation starts from the right scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from text3d.cameras import Cameras, CameraSamplerConfig, sample_cameras, view_direction_ids
from text3d.guidance.prompts import view_prompts
from text3d.render.shading import ShadingConfig, ShadingMode, sample_shading, shade

SHAPES = ("cube", "sphere", "cone", "torus", "cylinder")
"""The primitives: front-back symmetric, judged by silhouette and colour."""
CRATE = "crate"
"""The one asymmetric object: a cube whose front half (z > 0, the export's front) is yellow and back half blue.
Its captions carry text3d's view words like every image, so the model learns that "front view" shows a yellow box
and "back view" a blue one; a generation with view-dependent prompts must then put the yellow half on +Z (see
:mod:`text3d.toy.semantic`). Captioned "a crate" with no colour word, so "blue" keeps meaning the blue
primitives. (A first model with only the front face yellow, 1 image in 6 a crate and captions "a blue crate"
learned the words too weakly to move a generation: yellow in 16 % of its front-view samples' pixels.)"""
OBJECTS = (*SHAPES, CRATE)
"""Everything the world renders; index ``k`` is the ``shape_ids`` value."""
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.65, 0.15),
    "blue": (0.12, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.15, 0.75),
}
"""Albedos (linear [0, 1]); far apart in hue so shading never makes one look like another."""
COLOUR_NAMES = tuple(COLOURS)
CRATE_BODY, CRATE_FRONT = "blue", "yellow"
"""The crate's back and front colours, always the same."""
MODES = (ShadingMode.ALBEDO, ShadingMode.LAMBERTIAN, ShadingMode.TEXTURELESS)
BOUND_RADIUS = 0.9
"""Every shape lies inside this sphere; rays are traced only through it."""


# ---------------------------------------------------------------------------------------------- shapes (SDFs)
def _sdf_sphere(p: Tensor) -> Tensor:
    return p.norm(dim=-1) - 0.5


CUBE_HALF = 0.38
"""Half the side of the cube (and the crate)."""


def _sdf_cube(p: Tensor) -> Tensor:
    q = p.abs() - CUBE_HALF
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT = 0.25, 0.5
"""A tall cylinder (a pillar, upright along y). A squat one (radius 0.38, height 0.9) was within silhouette IoU
0.74 of the sphere in the 8 scoring views, too close to the NeRF's initial blob for generations to tell apart
(docs/benchmarks.md, issue 18 (b)); this one is at 0.55, like the torus."""


def _sdf_cylinder(p: Tensor) -> Tensor:
    d = torch.stack(
        [p[..., [0, 2]].norm(dim=-1) - CYLINDER_RADIUS, p[..., 1].abs() - CYLINDER_HALF_HEIGHT], dim=-1
    )
    return d.max(dim=-1).values.clamp(max=0) + d.clamp(min=0).norm(dim=-1)


def _sdf_cone(p: Tensor) -> Tensor:
    """Capped cone (apex up): base radius 0.5 at y = -0.45, a point at y = +0.45 (Inigo Quilez's exact SDF)."""
    h, r1, r2 = 0.45, 0.5, 0.0
    qx, qy = p[..., [0, 2]].norm(dim=-1), p[..., 1]
    k1x, k1y = r2, h
    k2x, k2y = r2 - r1, 2.0 * h
    cax = qx - torch.minimum(qx, torch.where(qy < 0, torch.full_like(qy, r1), torch.full_like(qy, r2)))
    cay = qy.abs() - h
    s = ((k1x - qx) * k2x + (k1y - qy) * k2y) / (k2x * k2x + k2y * k2y)
    s = s.clamp(0.0, 1.0)
    cbx, cby = qx - k1x + k2x * s, qy - k1y + k2y * s
    sign = torch.where((cbx < 0) & (cay < 0), -1.0, 1.0)
    return sign * torch.minimum(cax * cax + cay * cay, cbx * cbx + cby * cby).sqrt()


def _sdf_torus(p: Tensor) -> Tensor:
    """A ring lying in the XZ plane (ring radius 0.4, tube radius 0.16)."""
    q = torch.stack([p[..., [0, 2]].norm(dim=-1) - 0.4, p[..., 1]], dim=-1)
    return q.norm(dim=-1) - 0.16


_SDFS = {
    "cube": _sdf_cube,
    "sphere": _sdf_sphere,
    "cone": _sdf_cone,
    "torus": _sdf_torus,
    "cylinder": _sdf_cylinder,
    CRATE: _sdf_cube,
}


def shape_sdf(points: Float[Tensor, "*N 3"], shape_ids: Tensor) -> Float[Tensor, "*N"]:
    """Signed distance to the object named by ``OBJECTS[shape_ids]``; ``shape_ids`` broadcasts over
    ``points[..., 0]``."""
    out = torch.zeros(points.shape[:-1], dtype=points.dtype, device=points.device)
    ids = shape_ids.expand(points.shape[:-1])
    for k, name in enumerate(OBJECTS):
        sel = ids == k
        if sel.any():
            out[sel] = _SDFS[name](points[sel])
    return out


_TETRA = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


@dataclass
class Hits:
    """Per-ray result of :func:`trace`: ``hit`` ``[*R]``, and the ``points`` / ``normals`` ``[*R, 3]`` (zeros on
    a miss)."""

    hit: Tensor
    points: Tensor
    normals: Tensor


def trace(
    origins: Float[Tensor, "R 3"], dirs: Float[Tensor, "R 3"], shape_ids: Tensor, iters: int = 48
) -> Hits:
    """Sphere-trace rays (unit ``dirs``) against each ray's shape, inside the bounding sphere.

    Rays are grouped by shape and only those that enter the bounding sphere are traced; the active set is
    compacted every few iterations, so the cost follows the rays still marching.
    """
    n = origins.shape[0]
    hit = torch.zeros(n, dtype=torch.bool, device=origins.device)
    points = torch.zeros_like(origins)
    normals = torch.zeros_like(origins)
    b = (origins * dirs).sum(-1)
    disc = b * b - ((origins * origins).sum(-1) - BOUND_RADIUS**2)
    tet = _TETRA.to(origins)
    for k, name in enumerate(OBJECTS):
        sdf = _SDFS[name]
        idx = torch.nonzero((shape_ids == k) & (disc > 0))[:, 0]
        if idx.numel() == 0:
            continue
        o, d = origins[idx], dirs[idx]
        sq = disc[idx].sqrt()
        t = (-b[idx] - sq).clamp(min=0)
        t_far = -b[idx] + sq
        live = torch.arange(idx.numel(), device=idx.device)
        for it in range(iters):
            step = sdf(o[live] + t[live, None] * d[live])
            t[live] = t[live] + step
            if it % 8 == 7:
                keep = (t[live] < t_far[live]) & (step.abs() > 1e-5)
                live = live[keep]
                if live.numel() == 0:
                    break
        p = o + t[:, None] * d
        ok = (t < t_far) & (sdf(p).abs() < 2e-3)
        sel, p = idx[ok], p[ok]
        eps = 1e-3
        grad = sum(tet[j] * sdf(p + eps * tet[j])[:, None] for j in range(4))
        hit[sel] = True
        points[sel] = p
        normals[sel] = F.normalize(grad, dim=-1)
    return Hits(hit, points, normals)


def render(
    cameras: Cameras,
    shape_ids: Tensor,
    albedo: Float[Tensor, "B 3"],
    mode: ShadingMode,
    light_positions: Float[Tensor, "B 3"] | None,
    size: int = 32,
    supersample: int = 2,
    shading: ShadingConfig | None = None,
) -> tuple[Float[Tensor, "B 3 S S"], Float[Tensor, "B S S"]]:
    """Images (white background, [0, 1]) and coverage masks of one object per camera (``OBJECTS[shape_ids]``).

    ``albedo`` is each object's colour; a crate's front half (z > 0) is :data:`CRATE_FRONT` whatever it says. Shading
    is :func:`text3d.render.shading.shade`, exactly as the training renderers call it.
    """
    shading = shading if shading is not None else ShadingConfig()
    b, hs = len(cameras), size * supersample
    origins, dirs = cameras.rays(hs, hs)  # [B, H, W, 3]
    ids = shape_ids.view(b, 1, 1).expand(b, hs, hs).reshape(-1)
    hits = trace(origins.reshape(-1, 3), dirs.reshape(-1, 3), ids)
    alb = albedo.view(b, 1, 1, 3).expand(b, hs, hs, 3).reshape(-1, 3)
    front = hits.hit & (ids == OBJECTS.index(CRATE)) & (hits.points[:, 2] > 0.0)
    alb = torch.where(front[:, None], torch.tensor(COLOURS[CRATE_FRONT]).to(alb), alb)
    lights = None
    if light_positions is not None:
        lights = light_positions.view(b, 1, 1, 3).expand(b, hs, hs, 3).reshape(-1, 3)
    rgb = shade(alb, hits.normals, hits.points, lights, mode, shading.ambient, shading.diffuse)
    cov = hits.hit.float()[:, None]
    rgb = cov * rgb + (1.0 - cov)  # white background
    rgb = rgb.view(b, hs, hs, 3).permute(0, 3, 1, 2)
    mask = hits.hit.float().view(b, 1, hs, hs)
    if supersample > 1:
        rgb = F.avg_pool2d(rgb, supersample)
        mask = F.avg_pool2d(mask, supersample)
    return rgb.clamp(0, 1), mask[:, 0]


def render_silhouettes(cameras: Cameras, shape: str, size: int = 32) -> Float[Tensor, "B S S"]:
    """Coverage of the true object seen from ``cameras``, for silhouette IoU checks."""
    ids = torch.full((len(cameras),), OBJECTS.index(shape), dtype=torch.long)
    _, mask = render(cameras, ids, torch.ones(len(cameras), 3), ShadingMode.ALBEDO, None, size=size)
    return mask


# ---------------------------------------------------------------------------------------------- captions
def caption_base(shape_id: int, colour_id: int, mode: ShadingMode) -> str:
    """``"a red cone"``; textureless renders carry no colour, so their caption names the shape only, and so does
    every crate's (its colours never change)."""
    if mode is ShadingMode.TEXTURELESS or OBJECTS[shape_id] == CRATE:
        return f"a {OBJECTS[shape_id]}"
    return f"a {COLOUR_NAMES[colour_id]} {OBJECTS[shape_id]}"


def captions(shape_id: int, colour_id: int, mode: ShadingMode, view_id: int) -> tuple[str, str, str]:
    """The three captions an image is trained under: with its view suffix (text3d's own wording), plain, empty."""
    base = caption_base(shape_id, colour_id, mode)
    return view_prompts(base)[view_id], base, ""


def world_words() -> tuple[str, ...]:
    """Every word the world's captions use (the tokenizer spells each as one token)."""
    from text3d.cameras import VIEW_NAMES

    return ("a", "view", *OBJECTS, *COLOUR_NAMES, *VIEW_NAMES)


# ---------------------------------------------------------------------------------------------- data set
@dataclass(frozen=True)
class ToyWorldConfig:
    """How the training images are drawn. Cameras and shading use text3d's own configs and samplers."""

    n_images: int = 16384
    """About 12,300 primitives and 4,100 crates (see :attr:`crate_share`)."""
    size: int = 32
    batch: int = 16
    """Images per camera batch: one shading mode per batch, stratified azimuths, as in a training step."""
    cameras: CameraSamplerConfig = field(default_factory=CameraSamplerConfig)
    crate_share: float = 0.25
    """Share of images that show the crate; the rest are the primitives, drawn uniformly."""
    overhead_share: float = 0.125
    """Share of batches drawn from :attr:`overhead_elevation` instead, so the "overhead view" words (elevation
    over 60 degrees, never reached by the default range) are seen too."""
    overhead_elevation: tuple[float, float] = (60.0, 89.0)
    shading: ShadingConfig = field(
        default_factory=lambda: ShadingConfig(albedo_only_steps=0, albedo_prob=0.4, textureless_prob=0.3)
    )
    """text3d's light sampling; the mode shares are tilted towards colour (40% albedo, 42% lambertian,
    18% textureless) because textureless images teach shape only."""


@dataclass
class ToyDataset:
    """Rendered images and their labels; ``view_captions``/``plain_captions`` are per image."""

    images: Float[Tensor, "N 3 S S"]
    masks: Float[Tensor, "N S S"]
    shape_ids: Tensor
    colour_ids: Tensor
    mode_ids: Tensor
    view_ids: Tensor
    view_captions: list[str]
    plain_captions: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]


def make_dataset(cfg: ToyWorldConfig = ToyWorldConfig(), seed: int = 0) -> ToyDataset:
    """Render ``cfg.n_images`` labelled images, deterministically from ``seed`` (CPU)."""
    gen = torch.Generator().manual_seed(seed)
    overhead = CameraSamplerConfig(
        elevation_range=cfg.overhead_elevation,
        azimuth_range=cfg.cameras.azimuth_range,
        distance_range=cfg.cameras.distance_range,
        fovy_range=cfg.cameras.fovy_range,
        batch_size=cfg.batch,
    )
    normal = CameraSamplerConfig(**{**cfg.cameras.__dict__, "batch_size": cfg.batch})
    palette = torch.tensor(list(COLOURS.values()))
    out: dict[str, list] = {k: [] for k in ("img", "mask", "shape", "colour", "mode", "view")}
    vcaps, pcaps = [], []
    n_batches = -(-cfg.n_images // cfg.batch)
    for _ in range(n_batches):
        use_overhead = torch.rand(1, generator=gen).item() < cfg.overhead_share
        cams = sample_cameras(overhead if use_overhead else normal, generator=gen)
        params = sample_shading(cfg.shading, 0, cams, generator=gen)
        shape_ids = torch.randint(len(SHAPES), (cfg.batch,), generator=gen)
        crate = torch.rand(cfg.batch, generator=gen) < cfg.crate_share
        shape_ids = torch.where(crate, OBJECTS.index(CRATE), shape_ids)
        colour_ids = torch.randint(len(COLOURS), (cfg.batch,), generator=gen)
        colour_ids = torch.where(crate, COLOUR_NAMES.index(CRATE_BODY), colour_ids)
        img, mask = render(
            cams,
            shape_ids,
            palette[colour_ids],
            params.mode,
            params.light_positions,
            cfg.size,
            2,
            cfg.shading,
        )
        views = view_direction_ids(cams.elevation, cams.azimuth)
        mode_id = MODES.index(params.mode)
        for i in range(cfg.batch):
            v, p, _ = captions(int(shape_ids[i]), int(colour_ids[i]), params.mode, int(views[i]))
            vcaps.append(v)
            pcaps.append(p)
        out["img"].append(img)
        out["mask"].append(mask)
        out["shape"].append(shape_ids)
        out["colour"].append(colour_ids)
        out["mode"].append(torch.full((cfg.batch,), mode_id))
        out["view"].append(views)
    n = cfg.n_images
    cat = {k: torch.cat(v)[:n] for k, v in out.items()}
    return ToyDataset(
        images=cat["img"],
        masks=cat["mask"],
        shape_ids=cat["shape"],
        colour_ids=cat["colour"],
        mode_ids=cat["mode"],
        view_ids=cat["view"],
        view_captions=vcaps[:n],
        plain_captions=pcaps[:n],
    )
