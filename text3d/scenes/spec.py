"""A synthetic multi-view scene as plain data: mesh, material, world light, cameras and render settings.

The description is what the cache key hashes, so everything that changes a pixel is a field here (files are hashed
by content, not by path). Frames: the scene lives in Blender's world, **Z up** (front view looks from -Y), exactly
like NeRF-synthetic. Mesh files (OBJ, PLY, glTF, STL) are Y-up by convention and Blender's importers turn them into
Z-up, so the loader's Z-up -> Y-up transform (:data:`text3d.data.frames.Z_UP_TO_Y_UP`) gives back the file's
own coordinates.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

PRIMITIVES = ("cube", "uv_sphere", "ico_sphere", "suzanne", "cylinder", "cone", "torus")


@dataclass(frozen=True)
class MeshSpec:
    """The object: a Blender primitive by name or a mesh file (OBJ, PLY, STL, GLB, glTF)."""

    source: str = "suzanne"
    size: float = 1.0
    """Primitives: the diameter / edge length. Files: the longest bounding-box side after centring (0 = as is)."""
    subdivision: int = 0
    """Levels of a Catmull-Clark subdivision modifier (applied to the exported mesh too)."""
    smooth: bool = False
    location: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """XYZ Euler angles, degrees, in Blender's Z-up world."""
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class TextureSpec:
    """A base-colour texture (sRGB), UV-mapped. ``kind``: ``"file"`` (``path``), ``"checker"``, ``"gradient"`` or
    ``"noise"`` (smooth random colour blobs from ``seed``: distinctive everywhere, what feature matchers need)."""

    kind: str = "checker"
    path: str | None = None
    size: int = 256
    squares: int = 8
    """Checker: squares per side; the two colours are ``colors[0]`` and ``colors[1]``."""
    colors: tuple[tuple[float, float, float], ...] = ((0.9, 0.15, 0.1), (0.1, 0.35, 0.9))
    """sRGB colours in [0, 1]."""
    seed: int = 0
    """Noise: the random seed."""


@dataclass(frozen=True)
class MaterialSpec:
    """``"principled"`` (lit by the world) or ``"emission"`` (unlit: pixels equal the texture)."""

    kind: str = "principled"
    base_color: tuple[float, float, float] = (0.8, 0.8, 0.8)
    """Linear RGB, used when there is no texture."""
    texture: TextureSpec | None = field(default_factory=TextureSpec)
    roughness: float = 0.5
    metallic: float = 0.0
    base_color_b: tuple[float, float, float] | None = None
    """Spatially varying base colour (principled, no texture): linear RGB blended from ``base_color`` to this along
    object-space axis ``ramp_axis``, over ``[-mesh.size / 2, mesh.size / 2]`` (see :func:`pbr_ground_truth`)."""
    ramp_axis: int = 0
    split_axis: int = -1
    """Two materials (principled): object-space axis (0 x, 1 y, 2 z) above whose ``split_at`` coordinate the
    surface is ``upper`` instead; -1: one material."""
    split_at: float = 0.0
    upper: tuple[float, float, float, float, float] = (0.9, 0.6, 0.25, 0.15, 1.0)
    """The second material: linear base RGB, roughness, metallic."""


MATERIAL_EXTRAS_DEFAULTS = {
    "base_color_b": None,
    "ramp_axis": 0,
    "split_axis": -1,
    "split_at": 0.0,
    "upper": (0.9, 0.6, 0.25, 0.15, 1.0),
}
"""The spatially varying material fields; left out of the cache key at their defaults, so scenes described
before they existed keep their cached renders."""


def pbr_ground_truth(material: MaterialSpec, size: float, points_object: np.ndarray) -> np.ndarray:
    """``float64 [N, 5]`` (linear base RGB, roughness, metallic) of a principled material without a texture at
    object-space points (Blender's Z-up object frame), exactly as the Cycles script builds its node tree."""
    p = np.asarray(points_object, np.float64)
    base = np.broadcast_to(np.asarray(material.base_color, np.float64), p.shape).copy()
    if material.base_color_b is not None:
        t = np.clip(p[:, material.ramp_axis] / size + 0.5, 0.0, 1.0)[:, None]
        base = base * (1 - t) + np.asarray(material.base_color_b, np.float64) * t
    out = np.concatenate(
        [base, np.full((len(p), 1), material.roughness), np.full((len(p), 1), material.metallic)], -1
    )
    if material.split_axis >= 0:
        above = p[:, material.split_axis] > material.split_at
        out[above] = np.asarray(material.upper, np.float64)
    return out


@dataclass(frozen=True)
class WorldSpec:
    """World light: a uniform colour, an ``.hdr`` file, or ``"sky"``, a procedural HDR made in code."""

    kind: str = "sky"
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Linear RGB for ``kind="color"``."""
    hdr_path: str | None = None
    strength: float = 1.0
    rotation_z_deg: float = 0.0
    hdr_size: tuple[int, int] = (128, 64)
    """Width, height of the procedural sky (2:1 equirectangular)."""


@dataclass(frozen=True)
class CameraRigSpec:
    """Cameras looking at ``target`` from ``distance``: spread evenly over an elevation band for training, a ring
    for testing (azimuths offset from the training ones), as NeRF-synthetic does. Or explicit matrices."""

    n_train: int = 40
    n_val: int = 0
    n_test: int = 8
    distance: float = 3.0
    fov_deg: float = 40.0
    """Horizontal field of view (``camera_angle_x``)."""
    elevation_range_deg: tuple[float, float] = (-20.0, 70.0)
    test_elevation_deg: float = 25.0
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    explicit: dict[str, list[list[list[float]]]] | None = None
    """``{split: [c2w 4x4, ...]}`` in Blender's Z-up world; overrides the generated cameras."""


@dataclass(frozen=True)
class RenderSpec:
    width: int = 64
    height: int = 64
    samples: int = 16
    seed: int = 0
    transparent: bool = True
    denoise: bool = False
    max_bounces: int = 4
    threads: int = 0
    """Cycles threads (0 = Blender's choice). Not part of the cache key: it changes timing, not pixels... mostly
    (Cycles' sampling is deterministic per pixel for a fixed seed)."""


@dataclass(frozen=True)
class SceneSpec:
    mesh: MeshSpec = field(default_factory=MeshSpec)
    material: MaterialSpec = field(default_factory=MaterialSpec)
    world: WorldSpec = field(default_factory=WorldSpec)
    cameras: CameraRigSpec = field(default_factory=CameraRigSpec)
    render: RenderSpec = field(default_factory=RenderSpec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SceneSpec:
        """Inverse of :meth:`to_dict` (lists become tuples where the field is a tuple)."""

        def build(tp, value):
            if value is None or not dataclasses.is_dataclass(tp):
                return value
            kwargs = {}
            hints = {f.name: f for f in dataclasses.fields(tp)}
            for key, val in value.items():
                if key not in hints:
                    raise ValueError(f"unknown scene field {tp.__name__}.{key}")
                sub = _NESTED.get((tp, key))
                if sub is not None:
                    kwargs[key] = build(sub, val)
                elif isinstance(val, list) and key != "explicit":
                    kwargs[key] = _tuplify(val)
                else:
                    kwargs[key] = val
            return tp(**kwargs)

        return build(cls, d)


def suzanne_spec(
    texture: TextureSpec | None = None,
    *,
    subdivision: int = 1,
    roughness: float = 0.5,
    views: int = 40,
    test_views: int = 8,
    resolution: int = 64,
    samples: int = 16,
    denoise: bool = False,
) -> SceneSpec:
    """Blender's Suzanne (1.6 units, smooth) under the procedural sky, seen from 3 units with a 40° lens: the scene
    family the fit tests and benchmarks use. Defaults: the tests' (6x6 checker, subdivided once, 40 + 8 views at
    64², 16 samples); ``bench/fit_scenes.py`` has the benchmark's (noise texture, 100 + 20 views at 200²)."""
    return SceneSpec(
        mesh=MeshSpec(source="suzanne", size=1.6, subdivision=subdivision, smooth=True),
        material=MaterialSpec(texture=texture or TextureSpec(kind="checker", squares=6), roughness=roughness),
        world=WorldSpec(kind="sky"),
        cameras=CameraRigSpec(n_train=views, n_test=test_views, distance=3.0, fov_deg=40.0),
        render=RenderSpec(width=resolution, height=resolution, samples=samples, denoise=denoise),
    )


def _tuplify(v):
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


_NESTED = {
    (SceneSpec, "mesh"): MeshSpec,
    (SceneSpec, "material"): MaterialSpec,
    (SceneSpec, "world"): WorldSpec,
    (SceneSpec, "cameras"): CameraRigSpec,
    (SceneSpec, "render"): RenderSpec,
    (MaterialSpec, "texture"): TextureSpec,
}


# ------------------------------------------------------------------------------------------------ camera rigs
def look_at_z_up(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``[N, 4, 4]`` camera-to-world matrices in a Z-up world, OpenGL camera axes (look down -Z, +Y up)."""
    eye = np.atleast_2d(np.asarray(eye, np.float64))
    fwd = np.asarray(target, np.float64)[None] - eye
    fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True)
    up = np.broadcast_to(np.array([0.0, 0.0, 1.0]), fwd.shape).copy()
    degenerate = np.linalg.norm(np.cross(fwd, up), axis=-1) < 1e-6
    up[degenerate] = (0.0, 1.0, 0.0)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    true_up = np.cross(right, fwd)
    c2w = np.tile(np.eye(4), (eye.shape[0], 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, -fwd, eye
    return c2w


def rig_cameras(rig: CameraRigSpec) -> dict[str, np.ndarray]:
    """``{split: [N, 4, 4]}`` camera-to-world matrices (Blender Z-up world) for the rig; empty splits left out.

    Training cameras: ``sin(elevation)`` uniform over the band (equal area) with golden-angle azimuths, so any
    count covers the band evenly. Test (and val) cameras: a ring at ``test_elevation_deg`` whose azimuths sit
    between the training ones' (offset by half a step), so held-out views are never copies of training views.
    """
    if rig.explicit:
        return {k: np.asarray(v, np.float64).reshape(-1, 4, 4) for k, v in rig.explicit.items() if len(v)}
    target = np.asarray(rig.target, np.float64)

    def on_sphere(elev_deg: np.ndarray, azim_deg: np.ndarray) -> np.ndarray:
        el, az = np.deg2rad(elev_deg), np.deg2rad(azim_deg)
        # azimuth 0 looks from -Y (Blender's front view), increasing counter-clockwise seen from above
        eye = rig.distance * np.stack([np.cos(el) * np.sin(az), -np.cos(el) * np.cos(az), np.sin(el)], -1)
        return look_at_z_up(eye + target, target)

    out: dict[str, np.ndarray] = {}
    if rig.n_train:
        n = rig.n_train
        lo, hi = (math.sin(math.radians(a)) for a in rig.elevation_range_deg)
        z = lo + (hi - lo) * (np.arange(n) + 0.5) / n
        golden = 180.0 * (3.0 - math.sqrt(5.0))
        out["train"] = on_sphere(np.rad2deg(np.arcsin(z)), (np.arange(n) * golden) % 360.0)
    for split, n, phase in (("val", rig.n_val, 0.25), ("test", rig.n_test, 0.5)):
        if n:
            az = (np.arange(n) + phase) * (360.0 / n)
            out[split] = on_sphere(np.full(n, rig.test_elevation_deg), az)
    return out


# ------------------------------------------------------------------------------------------ procedural images
def checker_texture(spec: TextureSpec) -> np.ndarray:
    """``uint8 [S, S, 3]`` checkerboard with a smooth colour ramp across it, so every square is distinct."""
    s, n = spec.size, spec.squares
    ij = np.arange(s) * n // s
    board = (ij[:, None] + ij[None, :]) % 2
    c0, c1 = (np.asarray(c, np.float64) for c in spec.colors[:2])
    img = np.where(board[..., None] == 0, c0, c1)
    ramp = np.linspace(0.75, 1.0, s)
    img = img * ramp[:, None, None] * ramp[None, ::-1, None]
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def gradient_texture(spec: TextureSpec) -> np.ndarray:
    """``uint8 [S, S, 3]``: red across, green down, blue constant: any UV error shows as a colour shift."""
    s = spec.size
    u = (np.arange(s) + 0.5) / s
    img = np.stack(np.broadcast_arrays(u[None, :], u[:, None], np.full((1, 1), 0.35)), -1)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def noise_texture(spec: TextureSpec) -> np.ndarray:
    """``uint8 [S, S, 3]``: a sum of random colour blobs at several scales (seeded), with no repeats."""
    s = spec.size
    rng = np.random.default_rng(spec.seed)
    img = np.zeros((s, s, 3))
    for cells in (4, 8, 16, 32):
        grid = rng.random((cells + 1, cells + 1, 3))
        x = np.linspace(0, cells, s, endpoint=False)
        i = x.astype(int)
        f = x - i
        f = f * f * (3 - 2 * f)
        a = grid[i][:, i] * (1 - f)[None, :, None] + grid[i][:, i + 1] * f[None, :, None]
        b = grid[i + 1][:, i] * (1 - f)[None, :, None] + grid[i + 1][:, i + 1] * f[None, :, None]
        img += (a * (1 - f)[:, None, None] + b * f[:, None, None]) / cells**0.5
    img = (img - img.min()) / (img.max() - img.min())
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def sky_hdr(world: WorldSpec) -> np.ndarray:
    """``float32 [H, W, 3]`` equirectangular sky in linear radiance: blue-white gradient, dim ground, a warm sun.

    Row 0 is straight up (Blender's equirectangular convention: v = 1 at the zenith, image top); the sun sits at
    elevation 45 deg, a quarter turn round from the image centre.
    """
    w, h = world.hdr_size
    v = (np.arange(h) + 0.5) / h
    u = (np.arange(w) + 0.5) / w
    elev = (0.5 - v) * np.pi  # +pi/2 at the top row
    az = (u - 0.5) * 2 * np.pi
    sky = np.where(
        elev[:, None, None] > 0,
        np.array([0.55, 0.7, 1.0]) * (0.6 + 0.4 * np.cos(elev))[:, None, None],
        np.array([0.25, 0.22, 0.2]) * np.ones((h, 1, 1)),
    )
    sky = np.broadcast_to(sky, (h, w, 3)).copy()
    sun_dir = np.array(
        [
            math.cos(math.pi / 4) * math.cos(math.pi / 2),
            math.cos(math.pi / 4) * math.sin(math.pi / 2),
            math.sin(math.pi / 4),
        ]
    )
    dirs = np.stack(
        np.broadcast_arrays(
            np.cos(elev)[:, None] * np.cos(az)[None],
            np.cos(elev)[:, None] * np.sin(az)[None],
            np.sin(elev)[:, None],
        ),
        -1,
    )
    cosang = dirs @ sun_dir
    sky += np.array([12.0, 10.0, 7.0]) * np.exp((cosang - 1.0) / 0.004)[..., None]
    return sky.astype(np.float32)


def studio_hdr(width: int = 128, height: int = 64, key_azimuth_deg: float = -60.0) -> np.ndarray:
    """``float32 [H, W, 3]``: a second, different environment for relighting ground truth: a dim warm room, a
    large soft cool key light low on one side and a small bright orange rim light behind, in Blender's
    equirectangular layout (direction from ``u``, ``v`` as Blender reads it: ``u = 0.5 - atan2(y, x) / 2pi``)."""
    v = (np.arange(height) + 0.5) / height
    u = (np.arange(width) + 0.5) / width
    theta = v * np.pi
    phi = (0.5 - u) * 2 * np.pi
    d = np.stack(
        np.broadcast_arrays(
            np.sin(theta)[:, None] * np.cos(phi)[None],
            np.sin(theta)[:, None] * np.sin(phi)[None],
            np.cos(theta)[:, None],
        ),
        -1,
    )
    img = np.broadcast_to(np.array([0.22, 0.16, 0.12]) * (0.7 + 0.3 * d[..., 2:3]), d.shape).copy()

    def light(az_deg, el_deg, sharp, colour):
        az, el = np.deg2rad(az_deg), np.deg2rad(el_deg)
        c = d @ np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        return np.asarray(colour) * np.exp((c - 1.0) / sharp)[..., None]

    img += light(key_azimuth_deg, 15.0, 0.05, (1.6, 2.0, 2.6))
    img += light(key_azimuth_deg + 170.0, 30.0, 0.01, (6.0, 3.0, 1.0))
    return img.astype(np.float32)
