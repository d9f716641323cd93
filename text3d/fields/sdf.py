"""Signed distance fields: a learned one (hash grid + small MLP, started as a sphere) and analytic ones.

Sign convention: **negative inside**, positive outside, zero on the surface, so the outward normal is ``grad f``
and sphere tracing steps forward by ``f`` (the opposite of the tet code's positive-inside convention; the SDF
representation negates when it meshes).

Every field here has the same two methods, which is all the sphere tracer (:mod:`text3d.render.sphere_trace`)
uses: ``sdf(x [N, 3]) -> [N]`` and ``forward(x) -> (sdf [N], albedo [N, 3])``. The analytic fields (sphere, box,
torus) have learnable shape parameters, so the tracer's gradients can be checked against finite differences of a
known surface.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from text3d.fields.encoding import HashGridConfig, HashGridEncoding


@dataclass(frozen=True)
class SDFFieldConfig:
    encoding: HashGridConfig = field(
        default_factory=lambda: HashGridConfig(n_levels=16, log2_hashmap_size=19, max_resolution=2048)
    )
    hidden_dim: int = 64
    n_hidden_layers: int = 1
    bound: float = 1.0
    """The scene is the cube ``[-bound, bound]^3``."""
    init_radius: float = 0.5
    """The field starts as the exact SDF of a sphere of this radius at the centre (the sphere bias)."""
    softplus_beta: float = 100.0
    """Hidden activation ``softplus(beta * x) / beta`` (IDR's): ReLU-like, but smooth, so normals (the gradient)
    and the eikonal term's second derivatives are continuous in the MLP."""


class SDFField(nn.Module):
    """``f(x) = |x| - init_radius + mlp([x, hashgrid(x)])[0]``, albedo ``sigmoid(mlp(...)[1:4])``.

    The SDF row of the last layer starts at zero, so at step 0 the field is exactly the sphere's signed distance
    (``|grad f| = 1`` everywhere: sphere tracing is exact and the eikonal term is zero). This "sphere bias" plays
    the role of IDR's geometric initialisation with a hash grid in front of the MLP.
    """

    def __init__(self, cfg: SDFFieldConfig = SDFFieldConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoding = HashGridEncoding(cfg.encoding)
        layers: list[nn.Module] = []
        dim = 3 + self.encoding.output_dim
        for _ in range(cfg.n_hidden_layers):
            layers += [nn.Linear(dim, cfg.hidden_dim), nn.Softplus(beta=cfg.softplus_beta)]
            dim = cfg.hidden_dim
        last = nn.Linear(dim, 4)
        with torch.no_grad():
            last.weight[0].zero_()
            last.bias[0].zero_()
        layers.append(last)
        self.mlp = nn.Sequential(*layers)

    def _raw(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N 4"]:
        unit = (x / self.cfg.bound + 1.0) * 0.5
        return self.mlp(torch.cat([x / self.cfg.bound, self.encoding(unit)], dim=-1))

    def sdf(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N"]:
        return x.norm(dim=-1) - self.cfg.init_radius + self._raw(x)[:, 0]

    def albedo(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """Diffuse colour in [0, 1] (also what export bakes)."""
        return torch.sigmoid(self._raw(x)[:, 1:])

    def forward(self, x: Float[Tensor, "N 3"]) -> tuple[Float[Tensor, "N"], Float[Tensor, "N 3"]]:
        raw = self._raw(x)
        return x.norm(dim=-1) - self.cfg.init_radius + raw[:, 0], torch.sigmoid(raw[:, 1:])


# ------------------------------------------------------------------------------------------------ analytic fields
class _Analytic(nn.Module):
    """A closed-form SDF with a constant learnable colour."""

    def __init__(self, color: tuple[float, float, float], dtype: torch.dtype):
        super().__init__()
        self.color = nn.Parameter(torch.tensor(color, dtype=dtype))

    def sdf(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N"]:
        raise NotImplementedError

    def albedo(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        return self.color.to(x.dtype).expand(x.shape[0], 3)

    def forward(self, x: Float[Tensor, "N 3"]) -> tuple[Float[Tensor, "N"], Float[Tensor, "N 3"]]:
        return self.sdf(x), self.albedo(x)


def _param(value, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.as_tensor(value, dtype=dtype).clone())


class SphereSDF(_Analytic):
    """``|x - centre| - radius``; centre and radius are parameters."""

    def __init__(self, centre=(0.0, 0.0, 0.0), radius=0.5, color=(0.8, 0.3, 0.2), dtype=torch.float32):
        super().__init__(color, dtype)
        self.centre = _param(centre, dtype)
        self.radius = _param(radius, dtype)

    def sdf(self, x):
        return (x - self.centre).norm(dim=-1) - self.radius


def _safe_norm(v: Float[Tensor, "N 3"]) -> Float[Tensor, "N"]:
    """``|v|`` with a zero (not NaN) gradient at ``v = 0``."""
    sq = (v * v).sum(-1)
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))


class BoxSDF(_Analytic):
    """The exact SDF of an axis-aligned box: ``|max(q, 0)| + min(max_i q_i, 0)`` with ``q = |x - c| - h``; the
    half-extents ``h`` and centre ``c`` are parameters."""

    def __init__(
        self, half_extents=(0.4, 0.3, 0.2), centre=(0.0, 0.0, 0.0), color=(0.2, 0.5, 0.8), dtype=torch.float32
    ):
        super().__init__(color, dtype)
        self.half_extents = _param(half_extents, dtype)
        self.centre = _param(centre, dtype)

    def sdf(self, x):
        q = (x - self.centre).abs() - self.half_extents
        return _safe_norm(q.clamp(min=0.0)) + q.amax(dim=-1).clamp(max=0.0)


class TorusSDF(_Analytic):
    """A torus around the y axis: ``|(|x_xz - c_xz| - R, x_y - c_y)| - r``; radii and centre are parameters."""

    def __init__(
        self, major=0.45, minor=0.18, centre=(0.0, 0.0, 0.0), color=(0.9, 0.7, 0.2), dtype=torch.float32
    ):
        super().__init__(color, dtype)
        self.major = _param(major, dtype)
        self.minor = _param(minor, dtype)
        self.centre = _param(centre, dtype)

    def sdf(self, x):
        p = x - self.centre
        ring = _safe_norm(F.pad(p[:, [0, 2]], (0, 1))) - self.major
        return torch.stack([ring, p[:, 1]], dim=-1).norm(dim=-1) - self.minor
