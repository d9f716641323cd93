"""A fixed triangle mesh: the materials stage's surface (the fit's DMTet mesh, frozen), shaded by its shader.

The mesh is a persistent buffer set by :meth:`MeshRepresentation.init_from` (the previous stage's surface), so a
checkpoint holds it and a reloaded stage renders exactly what was trained; the background (copied from the
previous stage) is the only trainable part here. Colour and material live in the shader (PBR).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from text3d.cameras import Cameras
from text3d.errors import ConfigError
from text3d.fields.nerf import Background, BackgroundConfig
from text3d.geometry.asset import Asset
from text3d.geometry.mesh import TriMesh
from text3d.render.mesh import render_mesh
from text3d.render.shading import Shader
from text3d.representations.base import Representation
from text3d.views import RenderOutput, ViewSource


@dataclass(frozen=True)
class MeshRepresentationConfig:
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    raster_backend: str = "auto"


class MeshRepresentation(Representation):
    name = "mesh"

    def __init__(self, cfg: MeshRepresentationConfig = MeshRepresentationConfig()):
        super().__init__()
        self.cfg = cfg
        self.background = Background(cfg.background)
        self.register_buffer("verts", torch.zeros(0, 3))
        self.register_buffer("faces", torch.zeros(0, 3, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The mesh's size is the checkpoint's: take its shape, so a stage loads without its predecessor.
        for key in ("verts", "faces"):
            if prefix + key in state_dict:
                setattr(self, key, torch.empty_like(state_dict[prefix + key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def init_from(self, previous: Representation, views: ViewSource | None = None) -> None:
        """Take the previous stage's explicit surface (DMTet's), detached, and its background."""
        asset = previous.asset()
        if asset.mesh is None or asset.mesh.faces.shape[0] == 0:
            raise ConfigError(f"a mesh stage needs a surface; the {previous.name} stage has none")
        self.verts = asset.mesh.verts.detach().clone().to(self.verts)
        self.faces = asset.mesh.faces.detach().clone().long().to(self.verts.device)
        if hasattr(previous, "background"):
            self.background.load_state_dict(previous.background.state_dict())

    def param_groups(self) -> list[dict]:
        bg = [p for p in self.background.parameters() if p.requires_grad]
        return [{"name": "background", "params": bg, "lr": 1e-3}] if bg else []

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
        _, dirs = cameras.rays(height, width)
        return render_mesh(
            self.verts,
            self.faces,
            cameras,
            height,
            width,
            shader,
            shading,
            self.background(dirs),
            backend=self.cfg.raster_backend,
        )

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        return {}

    def asset(self) -> Asset:
        """The mesh; colour is the shader's (``Shader.finish_asset`` adds it)."""
        return Asset(
            albedo=lambda x: torch.full_like(x, 0.5), mesh=TriMesh(self.verts, self.faces), source=self.name
        )
