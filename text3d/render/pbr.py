"""Physically based shading: a GGX metallic-roughness material under a learnable HDR environment map.

The model is the split-sum approximation of image-based lighting (Karis 2013, as in nvdiffrec), in **linear**
colour, followed by the sRGB display transform Blender's "Standard" view applies (clipped at 1)::

    F0       = 0.04 (1 - metallic) + base * metallic                 # dielectric IOR 1.5, as Principled BSDF
    A, B     = DFG(n.v, roughness)                                    # GGX + Smith, integrated in code
    spec     = (F0 A + B) (1 + F_avg (1 - A - B) / (1 - F_avg (1 - A - B)))   # + multiple scattering
    diffuse  = base (1 - metallic) (1 - E_dielectric) * E(n) / pi     # E: irradiance; layered under the coat
    radiance = diffuse + spec * Lspec(r, roughness)                   # r: the view reflected about n

``Lspec`` is the environment prefiltered by the GGX lobe (``n = v = r``) at a ladder of roughness levels
(level 0 is the map itself) and interpolated linearly between levels; ``E`` is the cosine-weighted irradiance.
Both are dense matrices over environment texels, built once per size from the texel directions and solid
angles (:func:`prefilter_matrix`), so prefiltering is one matmul and the learned map gets exact gradients.
Rough levels work on the map area-averaged to at most ``prefilter_width`` texels across (their lobes are far
wider than a texel). Shadows and interreflections are not modelled (convex objects are exact).

**Environment orientation (Blender's world).** The map is equirectangular, ``[H, 2H, 3]`` linear radiance, row 0
at the zenith, exactly as Blender's Environment Texture node reads an ``.hdr`` in the world shader (default
vector, no rotation): a world direction ``d_b`` in Blender's Z-up frame lands at
``u = 0.5 - atan2(d_b.y, d_b.x) / 2pi`` (0 at the left edge), ``v = acos(d_b.z) / pi`` (0 at the top row). So the
image centre is Blender's +X, a quarter in from the left +Y, three quarters -Y (the side Blender's front view
looks from). text3d's frame is glTF's (+Y up, front +Z): ``d_b = (x, -z, y)``, i.e.
``u = 0.5 + atan2(z, x) / 2pi``, ``v = acos(y) / pi``. A map written by :func:`text3d.hdr.write_environment`
therefore lights a Blender scene (or a glTF imported into Blender) exactly as it lit text3d's render.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from text3d.cameras import Cameras
from text3d.fields.material import Material, MaterialField, MaterialFieldConfig
from text3d.render.shading import Shader

DIELECTRIC_F0 = 0.04
"""Fresnel reflectance at normal incidence of IOR 1.5, Principled BSDF's default dielectric."""


# --------------------------------------------------------------------------------------------- colour transforms
def linear_to_srgb(x: Tensor) -> Tensor:
    """sRGB OETF of linear values clipped to [0, 1] (Blender's "Standard" view transform)."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055)


def srgb_to_linear(x: Tensor) -> Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


# ------------------------------------------------------------------------------------------ equirectangular maps
def direction_to_uv(d: Float[Tensor, "*N 3"]) -> tuple[Tensor, Tensor]:
    """text3d-frame unit directions -> equirectangular ``(u, v)`` in [0, 1] (see the module docstring)."""
    u = 0.5 + torch.atan2(d[..., 2], d[..., 0]) / (2.0 * math.pi)
    v = torch.acos(d[..., 1].clamp(-1.0, 1.0)) / math.pi
    return u, v


def texel_directions(height: int, width: int) -> tuple[Float[Tensor, "HW 3"], Float[Tensor, "HW"]]:
    """Unit directions (text3d frame) of an equirectangular map's texel centres, row-major, and their solid
    angles (which sum to 4 pi), in float64."""
    theta = (torch.arange(height, dtype=torch.float64) + 0.5) * (math.pi / height)
    phi = ((torch.arange(width, dtype=torch.float64) + 0.5) / width - 0.5) * 2.0 * math.pi
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    d = torch.stack([th.sin() * ph.cos(), th.cos(), th.sin() * ph.sin()], -1).reshape(-1, 3)
    solid = (th.sin() * (2.0 * math.pi / width) * (math.pi / height)).reshape(-1)
    return d, solid


def sample_equirect(env: Float[Tensor, "H W C"], d: Float[Tensor, "N 3"]) -> Float[Tensor, "N C"]:
    """Bilinear lookup of an equirectangular map at unit directions, wrapping in azimuth and clamping at the
    poles. Gathers (no ``grid_sample``) so the backward pass is deterministic on every device."""
    h, w, c = env.shape
    u, v = direction_to_uv(d)
    x = u * w - 0.5
    y = (v * h - 0.5).clamp(0.0, h - 1.0)
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0i = x0.long()
    y0i = y0.long().clamp(0, h - 1)
    y1i = (y0i + 1).clamp(max=h - 1)
    x0w, x1w = x0i % w, (x0i + 1) % w
    flat = env.reshape(h * w, c)

    def at(yi: Tensor, xi: Tensor) -> Tensor:
        return flat[yi * w + xi]

    top = at(y0i, x0w) * (1 - fx) + at(y0i, x1w) * fx
    bottom = at(y1i, x0w) * (1 - fx) + at(y1i, x1w) * fx
    return top * (1 - fy) + bottom * fy


def ggx_d(cos_h: Tensor, alpha: float) -> Tensor:
    """GGX (Trowbridge-Reitz) normal distribution at ``cos(theta_h)``, alpha = roughness^2."""
    a2 = alpha * alpha
    return a2 / (math.pi * (cos_h * cos_h * (a2 - 1.0) + 1.0) ** 2)


def prefilter_matrix(out_hw: tuple[int, int], in_hw: tuple[int, int], roughness: float | None) -> Tensor:
    """``float32 [H_out W_out, H_in W_in]``: rows turn an input map's texels into one output texel.

    ``roughness`` given: the GGX-prefiltered radiance with ``n = v = r`` (weights ``D(h) (r.l)+ dw``, rows
    normalised to 1, Karis' split-sum convention). ``None``: diffuse radiance, ``(1/pi) sum L (n.l)+ dw``
    (absolute: a uniform unit light gives 1).
    """
    r, _ = texel_directions(*out_hw)
    light_dirs, solid = texel_directions(*in_hw)
    c = r @ light_dirs.T
    if roughness is None:
        return (c.clamp(min=0.0) * solid / math.pi).float()
    cos_h = ((1.0 + c) * 0.5).clamp(min=0.0).sqrt()
    w = ggx_d(cos_h, max(roughness, 1e-3) ** 2) * c.clamp(min=0.0) * solid
    return (w / w.sum(-1, keepdim=True).clamp(min=1e-30)).float()


@functools.lru_cache(maxsize=4)
def dfg_lut(size: int = 32, samples: int = 512) -> np.ndarray:
    """``float32 [size (roughness), size (n.v), 2]``: Karis' split-sum scale ``A`` and bias ``B`` of GGX with
    Smith's height-correlated-free separable G (``k = alpha / 2``), by importance sampling on a Hammersley set.
    Row i is roughness ``(i + 0.5) / size``; column j is ``n.v = (j + 0.5) / size``."""
    i = np.arange(samples)
    radical = np.array([int(f"{k:032b}"[::-1], 2) for k in i], np.float64) / 2.0**32
    xi1, xi2 = (i + 0.5) / samples, radical
    grid = (np.arange(size) + 0.5) / size
    out = np.zeros((size, size, 2), np.float32)
    for a_i, rough in enumerate(grid):
        a = rough * rough
        phi = 2 * np.pi * xi1
        cos_t = np.sqrt((1 - xi2) / (1 + (a * a - 1) * xi2))
        sin_t = np.sqrt(1 - cos_t**2)
        hx, hz = sin_t * np.cos(phi), cos_t  # V lies in the xz plane: H's y never enters
        k = a / 2.0
        for v_i, nv in enumerate(grid):
            vx, vz = math.sqrt(1 - nv * nv), nv
            vh = vx * hx + vz * hz
            lz = 2 * vh * hz - vz
            ok = (lz > 0) & (vh > 0)
            g = (nv / (nv * (1 - k) + k)) * (lz / (lz * (1 - k) + k))
            g_vis = np.where(ok, g * vh / (hz * nv), 0.0)
            fc = (1 - np.clip(vh, 0, 1)) ** 5
            out[a_i, v_i, 0] = np.mean((1 - fc) * g_vis)
            out[a_i, v_i, 1] = np.mean(fc * g_vis)
    return out


def lookup_dfg(lut: Float[Tensor, "R V 2"], n_dot_v: Tensor, roughness: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear lookup of :func:`dfg_lut` (differentiable in both coordinates)."""
    s = lut.shape[0]
    x = (n_dot_v * s - 0.5).clamp(0.0, s - 1.0)
    y = (roughness * s - 0.5).clamp(0.0, s - 1.0)
    x0, y0 = x.floor().long().clamp(max=s - 2), y.floor().long().clamp(max=s - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = lut[y0, x0] * (1 - fx) + lut[y0, x0 + 1] * fx
    bottom = lut[y0 + 1, x0] * (1 - fx) + lut[y0 + 1, x0 + 1] * fx
    ab = top * (1 - fy) + bottom * fy
    return ab[:, 0], ab[:, 1]


def level_weights(roughness: Float[Tensor, "N"], levels: tuple[float, ...]) -> Float[Tensor, "N L"]:
    """Piecewise-linear ("hat") interpolation weights of ``roughness`` over the ladder ``levels``."""
    lv = torch.tensor(levels, dtype=roughness.dtype, device=roughness.device)
    r = roughness.clamp(levels[0], levels[-1])[:, None]
    left = torch.cat([lv[:1] - 1.0, lv[:-1]])
    right = torch.cat([lv[1:], lv[-1:] + 1.0])
    up = (r - left) / (lv - left)
    down = (right - r) / (right - lv)
    return torch.minimum(up, down).clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------------ environment
@dataclass(frozen=True)
class EnvironmentConfig:
    height: int = 32
    """Map height; the width is twice it (equirectangular)."""
    init: float = 0.5
    """Initial uniform radiance (linear) of a learned map."""
    lr: float = 0.03
    """Adam step on the log radiance."""
    levels: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)
    """Roughness ladder of the prefiltered maps (0: the map itself)."""
    prefilter_width: int = 64
    """Rough levels are computed on the map area-averaged to at most this width."""
    diffuse_width: int = 32


class EnvironmentLight(nn.Module):
    """An equirectangular HDR environment (Blender world orientation; see the module docstring).

    Stored as log radiance ``[H, 2H, 3]`` (positive, and Adam's steps are relative, which suits a range from a dim
    ground to a sun). ``trainable=False`` holds a known light fixed (``--env``).
    """

    def __init__(
        self,
        cfg: EnvironmentConfig = EnvironmentConfig(),
        image: np.ndarray | None = None,
        trainable: bool = True,
    ):
        super().__init__()
        self.cfg = cfg
        if image is None:
            init = torch.full((cfg.height, 2 * cfg.height, 3), math.log(cfg.init))
        else:
            init = torch.from_numpy(np.asarray(image, np.float32)).clamp(min=1e-6).log()
        self.log_radiance = nn.Parameter(init, requires_grad=trainable)
        self._matrices: dict = {}

    @property
    def trainable(self) -> bool:
        return self.log_radiance.requires_grad

    def radiance(self) -> Float[Tensor, "H W 3"]:
        return self.log_radiance.exp()

    def param_groups(self) -> list[dict]:
        if not self.trainable:
            return []
        return [{"name": "environment", "params": [self.log_radiance], "lr": self.cfg.lr}]

    def _pooled(self, env: Tensor, width: int) -> Tensor:
        """Area-average ``env`` down to at most ``width`` texels across (solid-angle weighting is left to the
        matrices: pooling 2^k x 2^k blocks at these sizes moves no energy noticeably)."""
        w = env.shape[1]
        if w <= width:
            return env
        k = w // width
        return F.avg_pool2d(env.permute(2, 0, 1)[None], k)[0].permute(1, 2, 0)

    def _matrix(self, key, out_hw, in_hw, roughness, like: Tensor) -> Tensor:
        full = (key, out_hw, in_hw, like.device, like.dtype)
        if full not in self._matrices:
            self._matrices[full] = prefilter_matrix(out_hw, in_hw, roughness).to(like)
        return self._matrices[full]

    def prefiltered(self) -> tuple[list[Tensor], Tensor]:
        """The specular ladder (one ``[h, w, 3]`` map per level) and the diffuse radiance map."""
        env = self.radiance()
        maps = []
        for rough in self.cfg.levels:
            if rough == 0.0:
                maps.append(env)
                continue
            src = self._pooled(env, self.cfg.prefilter_width)
            hi, wi = src.shape[:2]
            ho = hi if rough < 0.4 else max(2, hi // 2)
            m = self._matrix(("spec", rough), (ho, 2 * ho), (hi, wi), rough, src)
            maps.append((m @ src.reshape(-1, 3)).reshape(ho, 2 * ho, 3))
        src = self._pooled(env, self.cfg.diffuse_width)
        hi, wi = src.shape[:2]
        ho = max(2, min(hi, 16))
        m = self._matrix("diffuse", (ho, 2 * ho), (hi, wi), None, src)
        return maps, (m @ src.reshape(-1, 3)).reshape(ho, 2 * ho, 3)

    def forward(self, d: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """Radiance arriving from directions ``d`` (the background a camera would see)."""
        return sample_equirect(self.radiance(), d)


# ------------------------------------------------------------------------------------------------- the shader
@dataclass(frozen=True)
class PBRShaderConfig:
    material: MaterialFieldConfig = field(default_factory=MaterialFieldConfig)
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)
    lr: float = 0.01
    network_lr_scale: float = 0.1
    lambda_smooth: float = 0.03
    """Base colour / roughness / metallic smoothness (|k(x) - k(x + eps)|, nvdiffrec's ``kd`` term): shading
    and shadow edges that the light cannot explain otherwise would be painted into the albedo without it."""
    smooth_eps: float = 0.01
    lambda_white: float = 0.01
    """Light chroma: ``mean |L - mean_rgb(L)| / mean(L)``. Colour can sit in the albedo or in the light; this
    keeps the light near-white, so a tinted object keeps its tint (nvdiffrec's ``lambda_light``)."""
    lambda_metallic: float = 0.0
    """Push metallic towards 0 or 1 (``m (1 - m)``): real materials are one or the other."""


@dataclass
class PBRState:
    """Per-batch state: each camera's position (``None``: render the base colour, for previews)."""

    camera_positions: Float[Tensor, "B 3"] | None = None
    needs_normals: bool = True


class PBRShader(Shader):
    """Split-sum image-based lighting of a material field under an environment map (module docstring).

    ``forward`` ignores the representation's own colour and queries its material at the surface points; it
    returns display (sRGB) colours in [0, 1], what photos hold.
    """

    def __init__(
        self,
        cfg: PBRShaderConfig = PBRShaderConfig(),
        material: nn.Module | None = None,
        environment: EnvironmentLight | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.material = material if material is not None else MaterialField(cfg.material)
        self.environment = environment if environment is not None else EnvironmentLight(cfg.environment)
        self.register_buffer("dfg", torch.from_numpy(dfg_lut()), persistent=False)
        self._last_points: Tensor | None = None

    def sample(self, step: int, cameras: Cameras) -> PBRState:
        return PBRState(cameras.positions)

    def preview(self) -> PBRState:
        return PBRState(None, needs_normals=False)

    def view_state(self, cameras: Cameras) -> PBRState:
        return PBRState(cameras.positions)

    def param_groups(self) -> list[dict]:
        groups = self.environment.param_groups()
        if isinstance(self.material, MaterialField):
            groups += [
                {
                    "name": "material_encoding",
                    "params": list(self.material.encoding.parameters()),
                    "lr": self.cfg.lr,
                },
                {
                    "name": "material_mlp",
                    "params": list(self.material.mlp.parameters()),
                    "lr": self.cfg.lr * self.cfg.network_lr_scale,
                },
            ]
        return groups

    def radiance(
        self, mat: Material, normal: Float[Tensor, "N 3"], view: Float[Tensor, "N 3"]
    ) -> Float[Tensor, "N 3"]:
        """Linear outgoing radiance towards ``view`` (unit vectors from the points to the eye)."""
        n_dot_v_raw = (normal * view).sum(-1, keepdim=True)
        normal = torch.where(n_dot_v_raw < 0, -normal, normal)  # seen from behind: two-sided
        n_dot_v = n_dot_v_raw.abs().clamp(1e-4, 1.0)
        refl = F.normalize(2.0 * n_dot_v * normal - view, dim=-1)
        rough, metal = mat.roughness, mat.metallic[:, None]
        a, b = lookup_dfg(self.dfg.to(normal), n_dot_v[:, 0], rough)
        a, b = a[:, None], b[:, None]
        f0 = DIELECTRIC_F0 * (1.0 - metal) + mat.base * metal
        e_ss = a + b
        f_avg = f0 + (1.0 - f0) / 21.0
        spec_w = (f0 * a + b) * (1.0 + f_avg * (1.0 - e_ss) / (1.0 - f_avg * (1.0 - e_ss)))
        e_diel = DIELECTRIC_F0 * a + b
        maps, diffuse_map = self.environment.prefiltered()
        w = level_weights(rough, self.environment.cfg.levels)
        spec_light = sum(w[:, k : k + 1] * sample_equirect(m, refl) for k, m in enumerate(maps))
        diffuse = mat.base * (1.0 - metal) * (1.0 - e_diel) * sample_equirect(diffuse_map, normal)
        return diffuse + spec_w * spec_light

    def forward(
        self,
        params: PBRState,
        albedo: Float[Tensor, "*N 3"],
        normal: Float[Tensor, "*N 3"] | None,
        points: Float[Tensor, "*N 3"],
        camera_index: Int[Tensor, "*N"],
    ) -> Float[Tensor, "*N 3"]:
        mat = self.material(points)
        if params.camera_positions is None:
            return linear_to_srgb(mat.base)
        if normal is None:
            raise ValueError("PBR shading needs normals")
        if self.training:
            self._last_points = points
        view = F.normalize(params.camera_positions[camera_index] - points, dim=-1)
        return linear_to_srgb(self.radiance(mat, normal, view))

    def finish_asset(self, asset):
        """The asset with this shader's material and light: sRGB base colour as its albedo, roughness and
        metallic, and the environment map (numpy, Blender orientation)."""
        import dataclasses

        def base(x: Tensor) -> Tensor:
            return linear_to_srgb(self.material(x).base)

        def roughness_metallic(x: Tensor) -> Tensor:
            m = self.material(x)
            return torch.stack([m.roughness, m.metallic], dim=-1)

        env = self.environment.radiance().detach().float().cpu().numpy()
        return dataclasses.replace(asset, albedo=base, roughness_metallic=roughness_metallic, environment=env)

    def regularizers(self, step: int) -> dict[str, Tensor]:
        """The smoothness, white-light and metallic terms of the last training render (config docstrings)."""
        terms: dict[str, Tensor] = {}
        pts = self._last_points
        self._last_points = None
        c = self.cfg
        if pts is not None and pts.shape[0] and (c.lambda_smooth > 0 or c.lambda_metallic > 0):
            mat = self.material(pts)
            if c.lambda_smooth > 0:
                jitter = pts + c.smooth_eps * torch.randn_like(pts)
                diff = (self.material(jitter).channels() - mat.channels()).abs().mean()
                terms["material_smooth"] = c.lambda_smooth * diff
            if c.lambda_metallic > 0:
                terms["metallic_binary"] = c.lambda_metallic * (mat.metallic * (1 - mat.metallic)).mean()
        if c.lambda_white > 0 and self.environment.trainable:
            env = self.environment.radiance()
            grey = env.mean(-1, keepdim=True)
            terms["light_white"] = c.lambda_white * (env - grey).abs().mean() / grey.mean().detach()
        return terms
