"""A fixed mesh whose colour is optimised: the representation behind ``text3d texture``.

The geometry is frozen (buffers, never parameters): positions, faces and per-corner UVs come from the user's mesh
and only the colour trains. Two colour models, chosen by ``colour``:

- ``"texture"`` (default): the UV texture itself, as a sum of ``levels`` images at halving resolutions (``size``,
  ``size / 2``, ...), passed through a sigmoid. A pixel's colour is the bilinear lookup of every level at its UV,
  summed. The coarse levels spread each gradient over a large area, so colour fills in quickly where few pixels
  land and the fine level only adds detail (a one-level texture trains each texel alone and leaves speckle where
  views are sparse). The result *is* the output texture: nothing is resampled at export.
- ``"field"``: a hash-grid colour field on the surface (as the NeRF's albedo), baked into the UV texture at the
  end by :func:`text3d.export.texture.bake_texture`. Colour is a function of 3D position, so it is continuous
  across UV seams and independent of the UV layout, but it is resampled once at export.

``docs/benchmarks.md`` (texture from photos) has the measurement that chose the default.

Rendering: rasterize (:mod:`text3d.render.raster`, nvdiffrast on CUDA, the PyTorch twin elsewhere), interpolate
positions, smooth normals and corner UVs, look the colour up, shade, composite over a solid background and
antialias the silhouette. The mesh lives in the *working frame* the caller chose (centred and scaled so orbit
cameras frame it, or a photo set's normalised frame); export writes the file's own positions, not these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from text3d.cameras import Cameras
from text3d.errors import ConfigError
from text3d.fields.encoding import HashGridConfig, HashGridEncoding
from text3d.geometry.asset import Asset
from text3d.geometry.mesh import TriMesh, vertex_normals
from text3d.render import raster
from text3d.render.shading import Shader
from text3d.representations.base import Representation
from text3d.views import RenderOutput

COLOUR_KINDS = ("texture", "field")


@dataclass(frozen=True)
class TexturedMeshConfig:
    colour: str = "texture"
    """``texture`` (a multi-resolution UV texture) or ``field`` (a hash-grid colour field, baked at the end)."""
    texture_size: int = 1024
    """``texture``: side of the finest level, which is the output texture's size."""
    levels: int = 6
    """``texture``: number of levels, each half the size of the one before."""
    lr: float = 0.005
    """Adam step of the texture levels (sigmoid logits) or of the field's grid."""
    field_encoding: HashGridConfig = field(
        default_factory=lambda: HashGridConfig(n_levels=12, log2_hashmap_size=17, max_resolution=1024)
    )
    field_hidden: int = 32
    field_lr_scale: float = 0.1
    """``field``: the MLP trains at ``lr * field_lr_scale``."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Solid background colour behind the mesh (what photos with masks are composited over)."""
    raster_backend: str = "auto"
    antialias: bool = True


class MultiResTexture(nn.Module):
    """``levels`` RGB logit images ``[1, S / 2^k, S / 2^k, 3]`` summed at lookup; row 0 is the texture's top
    (``v = 1``, the PNG's first row). Starts mid-grey (all logits 0)."""

    def __init__(self, size: int, levels: int):
        super().__init__()
        sizes = [max(1, size >> k) for k in range(levels)]
        self.levels = nn.ParameterList([nn.Parameter(torch.zeros(1, s, s, 3)) for s in sizes])

    def lookup(self, uv: Float[Tensor, "B H W 2"]) -> Float[Tensor, "B H W 3"]:
        """Colour at OpenGL UVs (``v`` up), bilinear per level, clamped at the border."""
        flipped = torch.stack([uv[..., 0], 1.0 - uv[..., 1]], dim=-1)
        logit = sum(raster.texture(t, flipped, boundary_mode="clamp") for t in self.levels)
        return torch.sigmoid(logit)

    @torch.no_grad()
    def image(self) -> Float[Tensor, "S S 3"]:
        """The texture at the finest level's size (coarser levels upsampled bilinearly, as :meth:`lookup` reads
        them at texel centres)."""
        size = self.levels[0].shape[1]
        total = torch.zeros(1, 3, size, size, device=self.levels[0].device)
        for t in self.levels:
            total += F.interpolate(
                t.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False
            )
        return torch.sigmoid(total)[0].permute(1, 2, 0)


class ColourField(nn.Module):
    """Hash grid + one hidden layer + sigmoid: RGB at points of ``[-bound, bound]^3``."""

    def __init__(self, encoding: HashGridConfig, hidden: int, bound: float):
        super().__init__()
        self.bound = bound
        self.encoding = HashGridEncoding(encoding)
        self.mlp = nn.Sequential(
            nn.Linear(self.encoding.output_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 3)
        )

    def forward(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        return torch.sigmoid(self.mlp(self.encoding((x / self.bound + 1.0) * 0.5)))


class TexturedMeshRepresentation(Representation):
    """A frozen mesh with a trainable colour (see the module docstring).

    Args:
        positions: ``[V, 3]`` vertex positions in the working frame.
        faces: ``[F, 3]`` vertex indices (the file's order).
        corner_uvs: ``[F, 3, 2]`` the UV of each face corner, OpenGL convention, in ``[0, 1]``.
        bound: the working frame's box ``[-bound, bound]^3`` (where the colour field lives).
    """

    name = "textured_mesh"

    def __init__(
        self,
        positions: Float[Tensor, "V 3"],
        faces: Int[Tensor, "F 3"],
        corner_uvs: Float[Tensor, "F 3 2"],
        cfg: TexturedMeshConfig = TexturedMeshConfig(),
        bound: float = 1.0,
    ):
        super().__init__()
        if cfg.colour not in COLOUR_KINDS:
            raise ConfigError(f"mesh colour must be one of {', '.join(COLOUR_KINDS)}; got {cfg.colour!r}")
        self.cfg = cfg
        verts = positions.float()
        faces = faces.long()
        n_faces = faces.shape[0]
        # Geometry is rebuilt from the input on every run: non-persistent, never checkpointed, never trained.
        self.register_buffer("verts", verts, persistent=False)
        self.register_buffer("faces", faces, persistent=False)
        self.register_buffer("normals", vertex_normals(verts, faces), persistent=False)
        self.register_buffer("corner_uvs", corner_uvs.float().reshape(-1, 2), persistent=False)
        self.register_buffer("corner_faces", torch.arange(3 * n_faces).reshape(n_faces, 3), persistent=False)
        self.register_buffer("opposites", raster.edge_opposites(faces), persistent=False)
        self.register_buffer("bg", torch.tensor(cfg.background, dtype=torch.float32), persistent=False)
        self.texture = MultiResTexture(cfg.texture_size, cfg.levels) if cfg.colour == "texture" else None
        self.field = (
            ColourField(cfg.field_encoding, cfg.field_hidden, bound) if cfg.colour == "field" else None
        )

    def param_groups(self) -> list[dict]:
        if self.texture is not None:
            return [{"name": "texture", "params": list(self.texture.parameters()), "lr": self.cfg.lr}]
        return [
            {"name": "colour_grid", "params": [self.field.encoding.embeddings], "lr": self.cfg.lr},
            {
                "name": "colour_mlp",
                "params": list(self.field.mlp.parameters()),
                "lr": self.cfg.lr * self.cfg.field_lr_scale,
            },
        ]

    def init_from(self, previous: Representation, views=None) -> None:
        """A later texturing stage continues the colour of the one before (same mesh, same colour model)."""
        if not isinstance(previous, TexturedMeshRepresentation) or previous.cfg.colour != self.cfg.colour:
            super().init_from(previous, views)
        self.load_state_dict(previous.state_dict())

    def asset(self) -> Asset:
        """The mesh (working frame) with the colour as a function of position: the field, or (texture) the
        colour of the nearest surface point's UV is not defined off the surface, so the texture is exported as
        it is (:meth:`texture_image`) and ``albedo`` is the field only."""
        albedo = self.field if self.field is not None else _no_albedo
        return Asset(albedo=albedo, mesh=TriMesh(self.verts, self.faces), source=self.name)

    @torch.no_grad()
    def texture_image(self) -> np.ndarray | None:
        """``[S, S, 3]`` float in [0, 1], row 0 = ``v = 1``: the trained texture, or ``None`` for the field (bake
        its :meth:`asset` albedo instead)."""
        if self.texture is None:
            return None
        return self.texture.image().float().cpu().numpy()

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        shader: Shader,
        shading,
        training: bool = False,
        generator: torch.Generator | None = None,
        with_normals: bool | None = None,
    ) -> RenderOutput:
        """``[B, H, W, *]`` images of the textured mesh, top row first."""
        b = len(cameras)
        verts = self.verts
        homo = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1)
        clip = homo @ cameras.mvp(aspect=width / height).transpose(-1, -2)  # [B, V, 4]
        rast = raster.rasterize(clip, self.faces, (height, width), backend=self.cfg.raster_backend)
        gbuf = raster.interpolate(torch.cat([verts, self.normals], dim=-1), rast, self.faces)
        mask = rast.mask  # [B, H, W, 1]
        covered = mask[..., 0] > 0
        bi = covered.nonzero()[:, 0]
        pts = gbuf[..., :3][covered]
        nrm = F.normalize(gbuf[..., 3:][covered], dim=-1, eps=1e-12)
        if self.texture is not None:
            uv = raster.interpolate(self.corner_uvs, rast, self.corner_faces)  # [B, H, W, 2]
            albedo = self.texture.lookup(uv)[covered]
        else:
            albedo = self.field(pts)
        color = shader(shading, albedo, nrm, pts, bi)
        bg = self.bg.to(color.dtype).expand(b, height, width, 3)
        fg = torch.zeros_like(bg).index_put((covered,), color)
        normal = torch.zeros_like(bg).index_put((covered,), nrm.to(bg.dtype))
        depth = (gbuf[..., :3] - cameras.positions[:, None, None, :]).norm(dim=-1, keepdim=True) * mask
        image = torch.cat([fg + (1.0 - mask) * bg, mask], dim=-1)
        if self.cfg.antialias:
            image = raster.antialias(image, rast, clip, self.faces, opposites=self.opposites)
        return RenderOutput(rgb=image[..., :3], opacity=image[..., 3:], depth=depth, normal=normal)


def _no_albedo(points: Tensor) -> Tensor:
    raise ConfigError("a texture-coloured mesh has no colour off its UVs; export its texture_image()")
