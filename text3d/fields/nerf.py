"""The coarse-stage field: hash grid + small MLP giving density and albedo, plus the background.

Density uses a Magic3D "blob" bias, ``blob_scale * (1 - |x| / blob_radius)``, added before the softplus, so the
field starts as a soft ball at the centre: SDS has something to shade from step 0 and empty space stays empty.
The same field keeps serving colour in the refine stage (DMTet queries :meth:`NeRFField.albedo` at surface points),
which is how colour carries over from the coarse stage to the refine stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from text3d.fields.encoding import HashGridConfig, HashGridEncoding

NORMAL_KINDS = ("finite_difference", "analytic")
"""How :class:`NeRFField` computes normals; see :attr:`NeRFFieldConfig.normals`."""

# Four tetrahedron directions for the finite-difference gradient: sum_k v_k f(x + eps v_k) = 4 eps grad f + O(eps^3).
_TETRA = ((1.0, -1.0, -1.0), (-1.0, -1.0, 1.0), (-1.0, 1.0, -1.0), (1.0, 1.0, 1.0))


@dataclass(frozen=True)
class NeRFFieldConfig:
    encoding: HashGridConfig = field(default_factory=HashGridConfig)
    hidden_dim: int = 64
    n_hidden_layers: int = 1
    bound: float = 1.0
    """The scene is the cube ``[-bound, bound]^3``."""
    blob_scale: float = 10.0
    blob_radius: float = 0.5
    normal_eps: float = 1e-2
    """Finite-difference step (world units) for normals from the density gradient."""
    normals: str = "finite_difference"
    """``finite_difference``: the density gradient from a tetrahedron stencil of ``normal_eps`` (4 extra field
    queries per sample, a gradient smoothed over ``normal_eps``); ``analytic``: the exact gradient of the
    piecewise-trilinear field by autograd (one backward pass through the queries already made; 1.4-1.5x the
    samples/s of the finite-difference form in a shaded step on CPU, docs/benchmarks.md issue 19). They agree to
    0.55 degree mean at a step of 1e-3 on a trained field (``tests/test_field_speed.py``)."""


@dataclass
class FieldOutput:
    density: Float[Tensor, "N"]
    albedo: Float[Tensor, "N 3"]
    normal: Float[Tensor, "N 3"] | None = None
    """Unit outward normals, ``-grad(density) / |grad|``; only when asked for."""


class NeRFField(nn.Module):
    def __init__(self, cfg: NeRFFieldConfig = NeRFFieldConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoding = HashGridEncoding(cfg.encoding)
        layers: list[nn.Module] = []
        dim = self.encoding.output_dim
        for _ in range(cfg.n_hidden_layers):
            layers += [nn.Linear(dim, cfg.hidden_dim), nn.ReLU(inplace=True)]
            dim = cfg.hidden_dim
        layers.append(nn.Linear(dim, 4))
        self.mlp = nn.Sequential(*layers)

    def _normalise(self, x: Tensor) -> Tensor:
        return (x / self.cfg.bound + 1.0) * 0.5

    def blob(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N"]:
        return self.cfg.blob_scale * (1.0 - x.norm(dim=-1) / self.cfg.blob_radius)

    def _raw(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N 4"]:
        return self.mlp(self.encoding(self._normalise(x)))

    def density(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N"]:
        """Volume density (>= 0) at world positions."""
        return F.softplus(self._raw(x)[:, 0] + self.blob(x))

    def albedo(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """Diffuse colour in [0, 1] at world positions (also used by the refine stage and texture baking)."""
        return torch.sigmoid(self._raw(x)[:, 1:])

    def density_gradient(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """Gradient of the density as the config's ``normals`` says (differentiable w.r.t. the field)."""
        if self.cfg.normals == "analytic":
            return self._density_and_gradient(x)[2]
        return self.density_gradient_fd(x)

    def density_gradient_fd(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """Finite-difference gradient of the density (4 extra evaluations; differentiable w.r.t. the field)."""
        eps = self.cfg.normal_eps
        dirs = torch.tensor(_TETRA, device=x.device, dtype=x.dtype)  # [4, 3]
        pts = (x[:, None, :] + eps * dirs).reshape(-1, 3)
        dens = self.density(pts).reshape(-1, 4, 1)
        return (dens * dirs).sum(dim=1) / (4.0 * eps)

    def _density_and_gradient(self, x: Float[Tensor, "N 3"]) -> tuple[Tensor, Tensor, Tensor]:
        """``(raw [N, 4], density [N], grad density [N, 3])`` with the gradient by autograd.

        While gradients are on, the gradient is part of the graph (``create_graph``), so a loss on the normals
        trains the field; without them (previews) nothing keeps a graph."""
        training = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            raw = self._raw(xg)
            density = F.softplus(raw[:, 0] + self.blob(xg))
            (grad,) = torch.autograd.grad(density, xg, torch.ones_like(density), create_graph=training)
        if not training:
            raw, density = raw.detach(), density.detach()
        return raw, density, grad

    def forward(self, x: Float[Tensor, "N 3"], with_normals: bool = False) -> FieldOutput:
        if with_normals and self.cfg.normals == "analytic":
            raw, density, grad = self._density_and_gradient(x)
            return FieldOutput(
                density=density, albedo=torch.sigmoid(raw[:, 1:]), normal=-F.normalize(grad, dim=-1, eps=1e-8)
            )
        raw = self._raw(x)
        out = FieldOutput(density=F.softplus(raw[:, 0] + self.blob(x)), albedo=torch.sigmoid(raw[:, 1:]))
        if with_normals:
            out.normal = -F.normalize(self.density_gradient_fd(x), dim=-1, eps=1e-8)
        return out


@dataclass(frozen=True)
class BackgroundConfig:
    kind: str = "learned"
    """``"learned"``: a small MLP of the view direction; ``"solid"``: a fixed colour."""
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    n_frequencies: int = 2
    hidden_dim: int = 32


class Background(nn.Module):
    """Colour seen along rays that leave the scene. Learned backgrounds let SDS explain the scene's surround."""

    def __init__(self, cfg: BackgroundConfig = BackgroundConfig()):
        super().__init__()
        if cfg.kind not in ("learned", "solid"):
            raise ValueError(f"background kind must be 'learned' or 'solid', got {cfg.kind!r}")
        self.cfg = cfg
        self.register_buffer("color", torch.tensor(cfg.color, dtype=torch.float32), persistent=False)
        if cfg.kind == "learned":
            in_dim = 3 + 6 * cfg.n_frequencies
            self.mlp = nn.Sequential(
                nn.Linear(in_dim, cfg.hidden_dim), nn.ReLU(inplace=True), nn.Linear(cfg.hidden_dim, 3)
            )

    def forward(self, dirs: Float[Tensor, "... 3"]) -> Float[Tensor, "... 3"]:
        if self.cfg.kind == "solid":
            return self.color.to(dirs).expand_as(dirs)
        freqs = 2.0 ** torch.arange(self.cfg.n_frequencies, device=dirs.device, dtype=dirs.dtype)
        ang = dirs[..., None, :] * freqs[:, None] * torch.pi  # [..., K, 3]
        enc = torch.cat([dirs, torch.sin(ang).flatten(-2), torch.cos(ang).flatten(-2)], dim=-1)
        return torch.sigmoid(self.mlp(enc))
