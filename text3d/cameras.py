"""Cameras: random training views, turntables, rays and projection matrices.

World frame (used everywhere in text3d, and identical to glTF's): right-handed, **+Y up**, and the view at
azimuth 0 looks at the object from **+Z**. So the side of the asset that SDS saw as its "front" during training
faces +Z in the exported file, with no rotation at export time.

A camera at elevation ``e`` and azimuth ``a`` (degrees) and distance ``d`` sits at
``d * (cos e sin a, sin e, cos e cos a)`` and looks at the origin. Camera frames follow OpenGL: the camera looks
down its local -Z, +Y is up and +X is right. Images are stored top row first (row 0 is the top of the picture).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from text3d.devices import upload

VIEW_NAMES = ("front", "side", "back", "overhead")
"""View-direction labels, in the order used by :func:`view_direction_ids` and the prompt embeddings."""


@dataclass(frozen=True)
class CameraSamplerConfig:
    """Ranges of the random training cameras (threestudio dreamfusion-sd defaults)."""

    elevation_range: tuple[float, float] = (-10.0, 45.0)
    """Degrees above the horizon."""
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    """Degrees; stratified over the batch so a batch covers the circle evenly."""
    distance_range: tuple[float, float] = (1.5, 2.0)
    fovy_range: tuple[float, float] = (40.0, 70.0)
    """Vertical field of view in degrees."""
    batch_size: int = 1
    eval_elevation: float = 15.0
    eval_distance: float = 1.75
    eval_fovy: float = 50.0


@dataclass
class Cameras:
    """A batch of pinhole cameras.

    Attributes:
        c2w: ``[B, 4, 4]`` camera-to-world matrices (OpenGL camera convention).
        fovy: ``[B]`` vertical field of view, radians.
        elevation, azimuth, distance: ``[B]`` the spherical coordinates the cameras were made from (degrees for
            the angles); used for view-dependent prompts.
    """

    c2w: Float[Tensor, "B 4 4"]
    fovy: Float[Tensor, "B"]
    elevation: Float[Tensor, "B"]
    azimuth: Float[Tensor, "B"]
    distance: Float[Tensor, "B"]

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def positions(self) -> Float[Tensor, "B 3"]:
        return self.c2w[:, :3, 3]

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(
            *(upload(t, device) for t in (self.c2w, self.fovy, self.elevation, self.azimuth, self.distance))
        )

    def __getitem__(self, idx: int | slice) -> Cameras:
        sl = slice(idx, idx + 1) if isinstance(idx, int) else idx
        return Cameras(self.c2w[sl], self.fovy[sl], self.elevation[sl], self.azimuth[sl], self.distance[sl])

    def rays(self, height: int, width: int) -> tuple[Float[Tensor, "B H W 3"], Float[Tensor, "B H W 3"]]:
        """Ray origins and unit directions through pixel centres, top row first."""
        dirs_cam = pixel_directions(height, width, self.fovy)  # [B, H, W, 3]
        rot = self.c2w[:, None, None, :3, :3]
        dirs = (rot @ dirs_cam[..., None])[..., 0]
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = self.positions[:, None, None, :].expand_as(dirs)
        return origins, dirs

    def mvp(self, aspect: float = 1.0, near: float = 0.1, far: float = 100.0) -> Float[Tensor, "B 4 4"]:
        """World-to-clip matrices (OpenGL clip space, y up), for rasterization."""
        proj = perspective(self.fovy, aspect, near, far)
        return proj @ torch.linalg.inv(self.c2w)


@dataclass
class RayBundle:
    """Arbitrary rays arranged as a ``[B, H, W]`` image, for renderers that march rays (the volume renderer):
    a random batch of pixels from many photos is ``B = 1, H = R, W = 1``; a photo with an off-centre principal
    point or lens distortion is its own ``[1, H, W]`` bundle. Duck-types the parts of :class:`Cameras` that ray
    marching reads (``rays``, ``len``, ``device``, ``positions``); rasterizers need :class:`Cameras`.

    Attributes:
        origins, directions: ``[B, H, W, 3]`` world-space origins and unit directions.
    """

    origins: Float[Tensor, "B H W 3"]
    directions: Float[Tensor, "B H W 3"]

    def __len__(self) -> int:
        return self.origins.shape[0]

    @property
    def device(self) -> torch.device:
        return self.origins.device

    @property
    def positions(self) -> Float[Tensor, "B 3"]:
        """The first ray's origin of each image (a camera position when all rays of an image share one)."""
        return self.origins[:, 0, 0]

    def rays(self, height: int, width: int) -> tuple[Float[Tensor, "B H W 3"], Float[Tensor, "B H W 3"]]:
        if tuple(self.origins.shape[1:3]) != (height, width):
            raise ValueError(
                f"this bundle holds {tuple(self.origins.shape[1:3])} rays per image, not {(height, width)}"
            )
        return self.origins, self.directions

    def mvp(self, *args, **kwargs):
        raise TypeError("a RayBundle has no projection: rasterizers need Cameras (a centred pinhole)")


def pixel_directions(height: int, width: int, fovy: Float[Tensor, "B"]) -> Float[Tensor, "B H W 3"]:
    """Camera-space directions (not normalised, z = -1) through pixel centres; row 0 is the top."""
    dev, dt = fovy.device, fovy.dtype
    ys = 1.0 - (torch.arange(height, device=dev, dtype=dt) + 0.5) * (2.0 / height)
    xs = (torch.arange(width, device=dev, dtype=dt) + 0.5) * (2.0 / width) - 1.0
    tan_y = torch.tan(fovy / 2)[:, None, None]
    tan_x = tan_y * (width / height)
    y = ys[None, :, None] * tan_y
    x = xs[None, None, :] * tan_x
    x, y = torch.broadcast_tensors(x, y)
    return torch.stack([x, y, -torch.ones_like(x)], dim=-1)


def perspective(fovy: Float[Tensor, "B"], aspect: float, near: float, far: float) -> Float[Tensor, "B 4 4"]:
    """OpenGL perspective projection matrices."""
    f = 1.0 / torch.tan(fovy / 2)
    proj = torch.zeros(fovy.shape[0], 4, 4, device=fovy.device, dtype=fovy.dtype)
    proj[:, 0, 0] = f / aspect
    proj[:, 1, 1] = f
    proj[:, 2, 2] = (far + near) / (near - far)
    proj[:, 2, 3] = 2 * far * near / (near - far)
    proj[:, 3, 2] = -1.0
    return proj


def look_at(eye: Float[Tensor, "B 3"], target: Float[Tensor, "B 3"] | None = None) -> Float[Tensor, "B 4 4"]:
    """Camera-to-world matrices looking from ``eye`` at ``target`` (default: the origin) with +Y up.

    Views along the Y axis (straight down or up) use -Z as the up vector instead, so the matrix stays finite.
    """
    if target is None:
        target = torch.zeros_like(eye)
    forward = target - eye
    forward = forward / forward.norm(dim=-1, keepdim=True)
    up = torch.tensor([0.0, 1.0, 0.0], device=eye.device, dtype=eye.dtype).expand_as(forward)
    degenerate = torch.cross(forward, up, dim=-1).norm(dim=-1, keepdim=True) < 1e-6
    alt_up = torch.tensor([0.0, 0.0, -1.0], device=eye.device, dtype=eye.dtype).expand_as(forward)
    up = torch.where(degenerate, alt_up, up)
    right = torch.cross(forward, up, dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    true_up = torch.cross(right, forward, dim=-1)
    c2w = torch.eye(4, device=eye.device, dtype=eye.dtype).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = true_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = eye
    return c2w


def spherical_to_position(
    elevation_deg: Float[Tensor, "B"], azimuth_deg: Float[Tensor, "B"], distance: Float[Tensor, "B"]
) -> Float[Tensor, "B 3"]:
    el, az = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack(
        [
            distance * torch.cos(el) * torch.sin(az),
            distance * torch.sin(el),
            distance * torch.cos(el) * torch.cos(az),
        ],
        dim=-1,
    )


def make_cameras(elevation_deg: Tensor, azimuth_deg: Tensor, distance: Tensor, fovy_deg: Tensor) -> Cameras:
    """Cameras from spherical coordinates (all ``[B]``, degrees for angles)."""
    eye = spherical_to_position(elevation_deg, azimuth_deg, distance)
    return Cameras(look_at(eye), torch.deg2rad(fovy_deg), elevation_deg, azimuth_deg, distance)


def sample_cameras(
    cfg: CameraSamplerConfig, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> Cameras:
    """Random training cameras. Azimuth is stratified over the batch (one random offset, even spacing)."""
    b = cfg.batch_size

    def uniform(lo_hi: tuple[float, float], n: int) -> Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=generator, device="cpu", dtype=torch.float64)

    elevation = uniform(cfg.elevation_range, b)
    lo, hi = cfg.azimuth_range
    strata = (
        torch.arange(b, dtype=torch.float64) + torch.rand(b, generator=generator, dtype=torch.float64)
    ) / b
    azimuth = lo + (hi - lo) * strata
    distance = uniform(cfg.distance_range, b)
    fovy = uniform(cfg.fovy_range, b)
    cams = make_cameras(*(t.float() for t in (elevation, azimuth, distance, fovy)))
    return cams.to(device)


def turntable_cameras(
    n_views: int,
    elevation_deg: float = 15.0,
    distance: float = 1.75,
    fovy_deg: float = 50.0,
    device: torch.device | str = "cpu",
    start_azimuth_deg: float = 0.0,
) -> Cameras:
    """``n_views`` cameras evenly spaced around the Y axis, starting at the front (azimuth 0)."""
    azimuth = start_azimuth_deg + torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)
    full = lambda v: torch.full((n_views,), float(v))  # noqa: E731
    return make_cameras(full(elevation_deg), azimuth, full(distance), full(fovy_deg)).to(device)


def threshold_cameras(cameras_cfg: CameraSamplerConfig, n_views: int, device: torch.device | str) -> Cameras:
    """Views for the ``auto`` threshold: evenly spread azimuths at the training elevations (eval, max, min in
    turn), at the evaluation distance and field of view."""
    lo, hi = cameras_cfg.elevation_range
    elevs = [cameras_cfg.eval_elevation, hi, lo]
    n = max(1, n_views)
    elevation = torch.tensor([elevs[i % 3] for i in range(n)], dtype=torch.float32)
    azimuth = torch.arange(n, dtype=torch.float32) * (360.0 / n)
    full = torch.full((n,), 1.0)
    cams = make_cameras(elevation, azimuth, full * cameras_cfg.eval_distance, full * cameras_cfg.eval_fovy)
    return cams.to(device)


def view_direction_ids(
    elevation_deg: Float[Tensor, "B"],
    azimuth_deg: Float[Tensor, "B"],
    front_half_angle: float = 45.0,
    overhead_elevation: float = 60.0,
) -> Tensor:
    """Index into :data:`VIEW_NAMES` for each camera: overhead above 60°, else front/back within 45° of 0°/180°."""
    az = torch.remainder(azimuth_deg + 180.0, 360.0) - 180.0  # (-180, 180]
    ids = torch.full_like(az, 1, dtype=torch.long)  # side
    ids = torch.where(az.abs() < front_half_angle, torch.zeros_like(ids), ids)
    ids = torch.where(az.abs() > 180.0 - front_half_angle, torch.full_like(ids, 2), ids)
    ids = torch.where(elevation_deg > overhead_elevation, torch.full_like(ids, 3), ids)
    return ids
