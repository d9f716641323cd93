"""Random scenes and how they are drawn: objects, distractors, camera, light, background and camera effects.

A :class:`Scene` is plain data drawn from one ``numpy`` generator seeded by ``(seed, image index)``, so an image
depends only on the seed, the config and its index (not on how many images came before or how they were
batched). :func:`render_scene` draws it with :mod:`text3d.render.raster` (nvdiffrast on CUDA, its PyTorch twin
elsewhere): one rasterization of all objects, whose triangle ids give each pixel's object, hence exact visible
masks with occlusion between objects; shading is Lambertian on linear colours. Every scene quantity the edge-case
search moves (an object's translation, the light) is a tensor input, so the same function is differentiable.

Frames: world +Y up (text3d's); the camera looks down its local -Z (OpenGL). Object ``matrix`` maps the asset's
normalised coordinates (:class:`text3d.dataset.assets.MeshAsset`) to the world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from text3d.cameras import look_at, perspective
from text3d.dataset.assets import DISTRACTOR_KINDS, MeshAsset, primitive
from text3d.dataset.config import DatasetConfig
from text3d.errors import ConfigError
from text3d.geometry.mesh import vertex_normals
from text3d.render import raster

NEAR, FAR = 0.05, 100.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Placed:
    """One object in a scene: a mesh, its class id (``-1`` for an unlabelled distractor) and its placement."""

    mesh: MeshAsset
    class_id: int
    matrix: Float[np.ndarray, "4 4"]


@dataclass
class Scene:
    """Everything that decides one image. ``light_direction`` is a world-space unit vector towards the light."""

    objects: list[Placed]
    c2w: Float[np.ndarray, "4 4"]
    fovy: float
    """Vertical field of view, degrees."""
    light_direction: Float[np.ndarray, "3"]
    light_intensity: float
    light_color: Float[np.ndarray, "3"]
    ambient: float
    background: dict
    """``{"kind": ..., "seed": ...}`` plus the kind's parameters (an image path for ``image``)."""
    noise: float
    noise_seed: int
    blur: float
    jpeg_quality: int
    search: dict = field(default_factory=dict)
    """What the edge-case search did (filled in by :mod:`text3d.dataset.edge_cases`)."""


# --------------------------------------------------------------------------------------------------- sampling
def _uniform(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = lo_hi
    return float(lo if lo == hi else rng.uniform(lo, hi))


def _integer(rng: np.random.Generator, lo_hi) -> int:
    lo, hi = int(lo_hi[0]), int(lo_hi[1])
    return int(rng.integers(lo, hi + 1))


def kelvin_to_rgb(kelvin: float) -> Float[np.ndarray, "3"]:
    """Linear RGB of a black body at ``kelvin`` (Tanner Helland's fit of the CIE data), scaled to max 1."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = (
        99.4708025861 * math.log(t) - 161.1195681661
        if t <= 66
        else 288.1221695283 * (t - 60) ** -0.0755148492
    )
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307)
    srgb = np.clip(np.array([r, g, b]) / 255.0, 0.0, 1.0)
    lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return (lin / lin.max()).astype(np.float64)


def _rotation(rng: np.random.Generator) -> Float[np.ndarray, "3 3"]:
    """A uniformly random rotation (a random unit quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def camera_matrix(elevation: float, azimuth: float, roll: float, distance: float) -> Float[np.ndarray, "4 4"]:
    """Camera-to-world for a camera at (elevation, azimuth) degrees looking at the origin, rolled by ``roll``."""
    el, az = math.radians(elevation), math.radians(azimuth)
    eye = distance * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    c2w = look_at(torch.tensor(eye, dtype=torch.float64)[None])[0].numpy()
    r = math.radians(roll)
    rz = np.eye(4)
    rz[:2, :2] = [[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]]
    return c2w @ rz


def background_images(folder: str | None) -> list[Path]:
    """The pictures of ``background.folder``, sorted (so the draw does not depend on the file system's order)."""
    if not folder:
        return []
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"background folder {path} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"background folder {path} holds no .jpg / .png pictures")
    return files


def sample_scene(
    rng: np.random.Generator,
    cfg: DatasetConfig,
    assets: list[MeshAsset],
    class_names: tuple[str, ...],
    backgrounds: list[Path],
) -> Scene:
    """Draw one scene: camera first, then objects placed in its view (so they can overlap and be cut off)."""
    sc, lc = cfg.scene, cfg.light
    c2w = camera_matrix(_uniform(rng, sc.elevation), _uniform(rng, sc.azimuth), _uniform(rng, sc.roll), 4.0)
    fovy = _uniform(rng, sc.fov)
    tan = math.tan(math.radians(fovy) / 2)

    def place(mesh: MeshAsset, class_id: int) -> Placed:
        depth = _uniform(rng, sc.depth)
        u, v = rng.uniform(-sc.screen_extent, sc.screen_extent, size=2)
        p_cam = np.array([u * depth * tan, v * depth * tan, -depth, 1.0])
        m = np.eye(4)
        m[:3, :3] = _rotation(rng) * _uniform(rng, sc.size)
        m[:3, 3] = (c2w @ p_cam)[:3]
        return Placed(mesh, class_id, m)

    objects = []
    for _ in range(_integer(rng, sc.objects)):
        mesh = assets[int(rng.integers(len(assets)))]
        objects.append(place(mesh, class_names.index(mesh.class_name)))
    for _ in range(_integer(rng, sc.distractors)):
        kind = DISTRACTOR_KINDS[int(rng.integers(len(DISTRACTOR_KINDS)))]
        objects.append(place(primitive(kind, tuple(rng.uniform(0.05, 0.95, size=3))), -1))

    # The light, in the camera's frame (so "from behind the camera" means something), then to the world.
    el, az = math.radians(_uniform(rng, lc.elevation)), math.radians(_uniform(rng, lc.azimuth))
    d_cam = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    light_dir = c2w[:3, :3] @ d_cam
    bg = cfg.background
    kinds = ["procedural", "solid"] + (["image"] if backgrounds else [])
    weights = np.array([bg.procedural, bg.solid] + ([bg.images] if backgrounds else []), dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    background: dict = {"kind": kind, "seed": int(rng.integers(2**31))}
    if kind == "image":
        background["image"] = str(backgrounds[int(rng.integers(len(backgrounds)))])
    ec = cfg.effects
    blur = _uniform(rng, ec.blur_sigma) if rng.uniform() < ec.blur_probability else 0.0
    return Scene(
        objects=objects,
        c2w=c2w,
        fovy=fovy,
        light_direction=light_dir / np.linalg.norm(light_dir),
        light_intensity=_uniform(rng, lc.intensity),
        light_color=kelvin_to_rgb(_uniform(rng, lc.temperature)),
        ambient=_uniform(rng, lc.ambient),
        background=background,
        noise=_uniform(rng, ec.noise),
        noise_seed=int(rng.integers(2**31)),
        blur=blur,
        jpeg_quality=_integer(rng, ec.jpeg_quality),
    )


# ------------------------------------------------------------------------------------------------- background
def _smooth_noise(rng: np.random.Generator, size: int) -> Float[np.ndarray, "H W 3"]:
    from scipy.ndimage import zoom

    cells = int(rng.integers(3, 17))
    grid = rng.uniform(0, 1, size=(cells, cells, 3))
    img = zoom(grid, (size / cells, size / cells, 1), order=3, mode="grid-wrap", grid_mode=True)
    return np.clip(img[:size, :size], 0, 1)


def make_background(spec: dict, size: int) -> Float[np.ndarray, "H W 3"]:
    """The background picture of a scene, sRGB in [0, 1], from its spec (deterministic)."""
    rng = np.random.default_rng(spec["seed"])
    kind = spec["kind"]
    if kind == "solid":
        return np.broadcast_to(rng.uniform(0, 1, size=3), (size, size, 3)).astype(np.float32)
    if kind == "image":
        from PIL import Image

        with Image.open(spec["image"]) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = int(min(w, h) * rng.uniform(0.5, 1.0))
            x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            im = im.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.float32) / 255.0
    pattern = int(rng.integers(4))
    a, b = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    angle = rng.uniform(0, math.pi)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    if pattern == 0:  # checker
        cell = rng.uniform(0.02, 0.15)
        sel = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2)[..., None]
    elif pattern == 1:  # stripes
        sel = (np.sin(t * 2 * math.pi / rng.uniform(0.03, 0.2)) > 0)[..., None].astype(np.float64)
    elif pattern == 2:  # gradient
        sel = ((t - t.min()) / max(t.max() - t.min(), 1e-9))[..., None]
    else:
        return _smooth_noise(rng, size).astype(np.float32)
    return (a * (1 - sel) + b * sel).astype(np.float32)


# --------------------------------------------------------------------------------------------------- rendering
@dataclass
class SceneMesh:
    """All objects of a scene as one triangle list, in the world frame."""

    verts: Float[Tensor, "V 3"]
    faces: Int[Tensor, "F 3"]
    colors: Float[Tensor, "V 3"]
    normals: Float[Tensor, "V 3"]
    face_object: Int[Tensor, "F"]
    """Index into ``scene.objects`` of each triangle."""


@dataclass
class Render:
    """One drawn scene. ``object_id`` is exact: the object whose triangle covers each pixel centre (``-1``: none)."""

    rgb: Float[Tensor, "H W 3"]
    """sRGB in [0, 1], before camera effects; differentiable w.r.t. the scene tensors."""
    object_id: Int[Tensor, "H W"]
    covered: Float[Tensor, "H W"]
    """The antialiased coverage of a chosen object (:func:`render_scene`'s ``soft_object``), for gradients."""


def scene_mesh(
    scene: Scene,
    device: torch.device,
    translations: dict[int, Tensor] | None = None,
    only: list[int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> SceneMesh:
    """Concatenate the scene's objects in world space.

    Args:
        translations: extra world-space offsets ``[3]`` per object index (tensors; the edge-case search's knobs).
        only: draw just these object indices (e.g. one object alone, to measure occlusion).
        dtype: of the world positions and normals (colours stay float32).
    """
    verts, faces, colors, normals, owner = [], [], [], [], []
    offset = 0
    for k, obj in enumerate(scene.objects):
        if only is not None and k not in only:
            continue
        m = torch.tensor(obj.matrix, dtype=dtype, device=device)
        v = torch.as_tensor(obj.mesh.verts, device=device).to(dtype)
        f = torch.as_tensor(obj.mesh.faces, device=device)
        vw = v @ m[:3, :3].T + m[:3, 3]
        if translations is not None and k in translations:
            vw = vw + translations[k]
        n = vertex_normals(v, f) @ m[:3, :3].T
        verts.append(vw)
        normals.append(n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        colors.append(torch.as_tensor(obj.mesh.colors, device=device))
        faces.append(f + offset)
        owner.append(torch.full((f.shape[0],), k, dtype=torch.long, device=device))
        offset += v.shape[0]
    if not verts:
        z = torch.zeros(0, 3, dtype=dtype, device=device)
        return SceneMesh(
            z,
            torch.zeros(0, 3, dtype=torch.long, device=device),
            z,
            z,
            torch.zeros(0, dtype=torch.long, device=device),
        )
    return SceneMesh(
        torch.cat(verts), torch.cat(faces), torch.cat(colors), torch.cat(normals), torch.cat(owner)
    )


def srgb_to_linear(x: Tensor) -> Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Tensor) -> Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(1e-8) ** (1 / 2.4) - 0.055)


def clip_positions(scene: Scene, verts: Float[Tensor, "V 3"]) -> Float[Tensor, "V 4"]:
    """World positions to OpenGL clip space through the scene's camera, in ``verts``' dtype."""
    dev = verts.device
    c2w = torch.tensor(scene.c2w, dtype=verts.dtype, device=dev)
    fovy = torch.tensor([math.radians(scene.fovy)], dtype=verts.dtype, device=dev)
    mvp = perspective(fovy, 1.0, NEAR, FAR)[0] @ torch.linalg.inv(c2w)
    return torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1) @ mvp.T


def render_scene(
    scene: Scene,
    size: int,
    background: Float[Tensor, "H W 3"] | None,
    device: torch.device | str = "cpu",
    antialias: bool = True,
    translations: dict[int, Tensor] | None = None,
    light: dict[str, Tensor] | None = None,
    soft_object: int | None = None,
    only: list[int] | None = None,
) -> Render:
    """Draw ``scene`` at ``size`` x ``size``.

    Args:
        background: sRGB ``[H, W, 3]`` behind the objects (``None``: black).
        translations: per-object world offsets (differentiable), see :func:`scene_mesh`.
        light: overrides of ``direction [3]``, ``intensity []``, ``ambient []`` as tensors (differentiable).
        soft_object: also return that object's antialiased coverage (1 on its pixels, blended at silhouettes),
            which carries gradients w.r.t. the positions of whatever covers it.
        only: draw only these objects.
    """
    device = torch.device(device)
    # Which triangle owns each pixel (the labels) is decided in float64 where the device has it (the torch twin
    # uses it; nvdiffrast takes float32): placed and projected in float32, a pixel centre within ~1e-4 px of an
    # edge can land on either side, which moves a small object's box by a pixel against an exact id render
    # (issue 17 (a)). Shading and antialiasing stay float32.
    exact = torch.float32 if device.type == "mps" else torch.float64
    mesh = scene_mesh(scene, device, translations, only, dtype=exact)
    cover = clip_positions(scene, mesh.verts)
    pos = cover.float()
    rast = raster.rasterize(cover, mesh.faces, (size, size))
    rast = raster.Rasterization(rast.rast.float(), rast.backend)
    tri = rast.triangle_id[0]  # [H, W]
    object_id = torch.where(tri >= 0, mesh.face_object.to(device)[tri.clamp_min(0)], torch.full_like(tri, -1))
    # Shade only the covered pixels (a compacted [1, N, 1, 4] rasterization; interpolation is per pixel).
    covered_px = (rast.rast[0, ..., 3] > 0).reshape(-1).nonzero()[:, 0]  # [N]
    sub = raster.Rasterization(rast.rast[0].reshape(-1, 4)[covered_px][None, :, None, :], rast.backend)
    attrs = torch.cat([mesh.colors, mesh.normals.float(), mesh.verts.float()], dim=-1)
    px = raster.interpolate(attrs, sub, mesh.faces)[0, :, 0]  # [N, 9]
    albedo, normal, point = px[:, :3], px[:, 3:6], px[:, 6:9]
    lt = light or {}
    direction = lt.get("direction", torch.tensor(scene.light_direction, dtype=torch.float32, device=device))
    direction = direction / direction.norm()
    intensity = lt.get("intensity", torch.tensor(scene.light_intensity, dtype=torch.float32, device=device))
    ambient = lt.get("ambient", torch.tensor(scene.ambient, dtype=torch.float32, device=device))
    color = torch.tensor(scene.light_color, dtype=torch.float32, device=device)
    eye = torch.tensor(scene.c2w[:3, 3], dtype=torch.float32, device=device)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    facing = ((eye - point) * normal).sum(-1, keepdim=True)
    normal = torch.where(facing < 0, -normal, normal)  # two-sided: the side the camera sees
    lambert = (normal * direction).sum(-1, keepdim=True).clamp_min(0.0)
    fg = linear_to_srgb(srgb_to_linear(albedo) * (ambient + intensity * color * lambert))  # [N, 3]
    bg = background.to(device) if background is not None else torch.zeros(size, size, 3, device=device)
    rgb = bg.reshape(-1, 3).to(fg.dtype).index_put((covered_px,), fg).reshape(size, size, 3)
    channels = [rgb]
    if soft_object is not None:
        channels.append((object_id == soft_object).float()[..., None])
    img = torch.cat(channels, dim=-1)[None]
    if antialias or soft_object is not None:
        img = raster.antialias(img, rast, pos, mesh.faces)
    img = img[0]
    covered = img[..., 3] if soft_object is not None else torch.zeros(0, device=device)
    return Render(rgb=img[..., :3] if antialias else rgb, object_id=object_id, covered=covered)


# ----------------------------------------------------------------------------------------------- camera effects
def apply_effects(rgb: Float[np.ndarray, "H W 3"], scene: Scene) -> np.ndarray:
    """Blur then noise, quantised to ``uint8`` (JPEG compression happens when the image is encoded)."""
    img = rgb.astype(np.float32)
    if scene.blur > 0:
        from scipy.ndimage import gaussian_filter

        img = gaussian_filter(img, sigma=(scene.blur, scene.blur, 0), mode="nearest")
    if scene.noise > 0:
        noise_rng = np.random.default_rng(scene.noise_seed)
        img = img + noise_rng.normal(0.0, scene.noise, size=img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality), subsampling=0)
    return buf.getvalue()
