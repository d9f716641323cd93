"""Material fields: the PBR channels (base colour, roughness, metallic) as functions of surface position.

:class:`MaterialField` is a hash grid + small MLP, like the NeRF's albedo head, with five outputs squashed into
their ranges: base colour in **linear** RGB [0, 1] (what a glTF ``baseColorTexture`` holds once sRGB-encoded),
roughness in ``[min_roughness, 1]`` (Blender's / glTF's perceptual roughness; GGX alpha is its square) and metallic
in [0, 1]. :class:`UniformMaterial` is a fixed material (tests, known-material checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor, nn

from text3d.fields.encoding import HashGridConfig, HashGridEncoding


@dataclass
class Material:
    """PBR channels at ``N`` points."""

    base: Float[Tensor, "N 3"]
    """Linear base colour in [0, 1]."""
    roughness: Float[Tensor, "N"]
    metallic: Float[Tensor, "N"]

    def channels(self) -> Float[Tensor, "N 5"]:
        """``[base r, g, b, roughness, metallic]``."""
        return torch.cat([self.base, self.roughness[:, None], self.metallic[:, None]], dim=-1)


@dataclass(frozen=True)
class MaterialFieldConfig:
    encoding: HashGridConfig = field(
        default_factory=lambda: HashGridConfig(n_levels=12, log2_hashmap_size=16, max_resolution=512)
    )
    hidden_dim: int = 32
    n_hidden_layers: int = 1
    bound: float = 1.0
    min_roughness: float = 0.05
    """Below this GGX's lobe is narrower than any environment texel: nothing could be learned there."""
    init_base: float = 0.5
    init_roughness: float = 0.5
    init_metallic: float = 0.2


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class MaterialField(nn.Module):
    """Hash grid + MLP -> (base colour, roughness, metallic) at world positions in ``[-bound, bound]^3``.

    The last layer starts at zero weights with biases at the configured initial values, so a new field is a
    uniform, mid-grey, half-rough, mostly dielectric material everywhere (what the first steps of a fit see).
    """

    def __init__(self, cfg: MaterialFieldConfig = MaterialFieldConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoding = HashGridEncoding(cfg.encoding)
        layers: list[nn.Module] = []
        dim = self.encoding.output_dim
        for _ in range(cfg.n_hidden_layers):
            layers += [nn.Linear(dim, cfg.hidden_dim), nn.ReLU(inplace=True)]
            dim = cfg.hidden_dim
        last = nn.Linear(dim, 5)
        lo = cfg.min_roughness
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.copy_(
                torch.tensor(
                    [_logit(cfg.init_base)] * 3
                    + [_logit((cfg.init_roughness - lo) / (1.0 - lo)), _logit(cfg.init_metallic)]
                )
            )
        layers.append(last)
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Float[Tensor, "N 3"]) -> Material:
        raw = torch.sigmoid(self.mlp(self.encoding((x / self.cfg.bound + 1.0) * 0.5)))
        lo = self.cfg.min_roughness
        return Material(base=raw[:, :3], roughness=lo + (1.0 - lo) * raw[:, 3], metallic=raw[:, 4])


class UniformMaterial(nn.Module):
    """One material everywhere (fixed buffers, no parameters)."""

    def __init__(self, base: tuple[float, float, float], roughness: float, metallic: float):
        super().__init__()
        self.register_buffer("value", torch.tensor([*base, roughness, metallic], dtype=torch.float32))

    def forward(self, x: Float[Tensor, "N 3"]) -> Material:
        v = self.value.to(x).expand(x.shape[0], 5)
        return Material(base=v[:, :3], roughness=v[:, 3], metallic=v[:, 4])
