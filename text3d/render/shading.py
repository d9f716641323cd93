"""DreamFusion-style shading: albedo, Lambertian under a random point light, and textureless.

Shading with random lights is what forces SDS to produce geometry: with albedo alone a flat painted billboard
can satisfy the diffusion model. The first ``albedo_only_steps`` render albedo only, so the colour can settle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from text3d.cameras import Cameras
from text3d.devices import upload


class ShadingMode(enum.Enum):
    ALBEDO = "albedo"
    LAMBERTIAN = "lambertian"
    TEXTURELESS = "textureless"


@dataclass(frozen=True)
class ShadingConfig:
    """threestudio's diffuse-with-point-light material and its DreamFusion light sampling."""

    albedo_only_steps: int = 2000
    albedo_prob: float = 0.2
    """After the albedo-only phase: probability of an albedo render; the rest are shaded."""
    textureless_prob: float = 0.5
    """Of the shaded renders, the share drawn textureless (white albedo)."""
    ambient: float = 0.1
    diffuse: float = 0.9
    light_distance_range: tuple[float, float] = (0.8, 1.5)
    light_perturb: float = 1.0


@dataclass
class ShadingParams:
    mode: ShadingMode
    light_positions: Float[Tensor, "B 3"] | None = None
    ambient: float = 0.1
    diffuse: float = 0.9


def sample_shading(
    cfg: ShadingConfig, step: int, cameras: Cameras, generator: torch.Generator | None = None
) -> ShadingParams:
    """Draw one shading mode for the batch, and a point light near each camera's direction."""
    if step < cfg.albedo_only_steps:
        return ShadingParams(ShadingMode.ALBEDO, None, cfg.ambient, cfg.diffuse)
    u = torch.rand(2, generator=generator).tolist()
    b = len(cameras)
    # Random numbers come from the CPU stream (so they are the same on any device); the light positions are
    # built on the cameras' device without copying anything back to the host.
    jitter = upload(torch.randn(b, 3, generator=generator), cameras.device)
    lo, hi = cfg.light_distance_range
    dist = upload(lo + (hi - lo) * torch.rand(b, 1, generator=generator), cameras.device)
    cam_dir = F.normalize(cameras.positions, dim=-1)
    lights = F.normalize(cam_dir + cfg.light_perturb * jitter, dim=-1) * dist
    if u[0] < cfg.albedo_prob:
        return ShadingParams(ShadingMode.ALBEDO, None, cfg.ambient, cfg.diffuse)
    mode = ShadingMode.TEXTURELESS if u[1] < cfg.textureless_prob else ShadingMode.LAMBERTIAN
    return ShadingParams(mode, lights, cfg.ambient, cfg.diffuse)


def shade(
    albedo: Float[Tensor, "*N 3"],
    normal: Float[Tensor, "*N 3"] | None,
    points: Float[Tensor, "*N 3"],
    light_position: Float[Tensor, "*N 3"] | None,
    mode: ShadingMode,
    ambient: float = 0.1,
    diffuse: float = 0.9,
) -> Float[Tensor, "*N 3"]:
    """Colour of surface points. ``normal`` and ``light_position`` are needed for the two lit modes."""
    if mode is ShadingMode.ALBEDO:
        return albedo
    if normal is None or light_position is None:
        raise ValueError(f"{mode.value} shading needs normals and a light position")
    to_light = F.normalize(light_position - points, dim=-1)
    lambert = (normal * to_light).sum(-1, keepdim=True).clamp(min=0.0)
    light = ambient + diffuse * lambert
    if mode is ShadingMode.TEXTURELESS:
        return light.expand_as(albedo)
    return (albedo * light).clamp(0.0, 1.0)
