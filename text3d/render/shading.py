"""Shaders: how a surface point's material becomes a colour, behind one small interface.

A :class:`Shader` draws its per-step random state once per training step (:meth:`Shader.sample`, e.g. a point light
per camera), and then colours surface points for any renderer (:meth:`Shader.forward`); the volume renderer calls it
per sample, the rasterizer per covered pixel. A shader may own trainable state (a learned environment map): it is
an ``nn.Module``, checkpointed with the stage.

:class:`DiffuseShader` is DreamFusion's: albedo, Lambertian under a random point light, and textureless. Shading
with random lights is what forces SDS to produce geometry: with albedo alone a flat painted billboard can satisfy
the diffusion model. The first ``albedo_only_steps`` render albedo only, so the colour can settle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

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
    """One draw of :class:`DiffuseShader`'s random state: the mode for the batch and a light per camera."""

    mode: ShadingMode
    light_positions: Float[Tensor, "B 3"] | None = None
    ambient: float = 0.1
    diffuse: float = 0.9

    @property
    def needs_normals(self) -> bool:
        return self.mode is not ShadingMode.ALBEDO


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


class Shader(nn.Module):
    """Colours surface points. Subclasses implement :meth:`sample`, :meth:`preview` and :meth:`forward`.

    The object :meth:`sample` returns is the shader's own (renderers pass it back unread) but has a
    ``needs_normals`` attribute, so renderers compute normals only when the shading uses them.
    """

    def sample(self, step: int, cameras: Cameras):
        """Per-step random state for a batch of cameras (drawn from the torch RNG, so it is checkpointed)."""
        raise NotImplementedError

    def preview(self):
        """Deterministic state for previews, videos and the silhouette search (draws no random numbers)."""
        raise NotImplementedError

    def view_state(self, cameras: Cameras):
        """Deterministic state for rendering ``cameras`` as the shader sees them lit (evaluation, relighting);
        by default the preview state. Shaders whose colour depends on the view (PBR) override it."""
        return self.preview()

    def param_groups(self) -> list[dict]:
        """Adam groups of trainable state (none by default)."""
        return []

    def finish_asset(self, asset):
        """The asset export reads, with whatever the shader owns added (PBR: material channels and light)."""
        return asset

    def regularizers(self, step: int) -> dict:
        """Weighted penalty terms on the shader's own state, from the last training render (none by default)."""
        return {}

    def forward(
        self,
        params,
        albedo: Float[Tensor, "*N 3"],
        normal: Float[Tensor, "*N 3"] | None,
        points: Float[Tensor, "*N 3"],
        camera_index: Int[Tensor, "*N"],
    ) -> Float[Tensor, "*N 3"]:
        """Colour of surface points; ``camera_index`` says which camera of the batch each point was seen from."""
        raise NotImplementedError


class DiffuseShader(Shader):
    """Albedo, Lambertian under a point light per camera, or textureless (see the module docstring)."""

    def __init__(self, cfg: ShadingConfig = ShadingConfig()):
        super().__init__()
        self.cfg = cfg

    def sample(self, step: int, cameras: Cameras) -> ShadingParams:
        return sample_shading(self.cfg, step, cameras)

    def preview(self) -> ShadingParams:
        return ShadingParams(ShadingMode.ALBEDO, None, self.cfg.ambient, self.cfg.diffuse)

    def forward(self, params: ShadingParams, albedo, normal, points, camera_index):
        lights = None if params.light_positions is None else params.light_positions[camera_index]
        return shade(albedo, normal, points, lights, params.mode, params.ambient, params.diffuse)


class UnlitShader(Shader):
    """The surface's colour as it is (radiance, no light): what photos of a scene fix. Fitting uses it, so the
    recovered colour is what the camera saw, lighting included."""

    def __init__(self):
        super().__init__()

    def sample(self, step: int, cameras: Cameras) -> ShadingParams:
        return ShadingParams(ShadingMode.ALBEDO)

    def preview(self) -> ShadingParams:
        return ShadingParams(ShadingMode.ALBEDO)

    def forward(self, params: ShadingParams, albedo, normal, points, camera_index):
        return albedo
