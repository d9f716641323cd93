"""What a trained representation hands to export: a surface (explicit or implicit) and its material channels.

Export reads an :class:`Asset`, never a representation's internals, so a new representation only has to say
what its surface and colours are. Channels are functions of world position (``[N, 3] -> [N, C]``), baked into
textures by export; later materials (roughness, metallic) and a learned environment light join as more fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from text3d.geometry.mesh import TriMesh

ColorFn = Callable[[Tensor], Tensor]
"""``color_fn(points [N, 3]) -> rgb [N, 3]`` in [0, 1], on the asset's device."""

DensityFn = Callable[[Tensor], Tensor]
"""``density_fn(points [N, 3]) -> density [N]`` (>= 0), e.g. :meth:`text3d.fields.nerf.NeRFField.density`."""


@dataclass
class Asset:
    """A surface and its base colour, in the representation's frame (text3d's world: +Y up, front +Z).

    Exactly one of ``mesh`` and ``density`` is set.

    Attributes:
        albedo: base colour at surface points.
        mesh: an explicit surface (DMTet's marching-tets mesh), exported as it is.
        density: an implicit one (a NeRF); export takes its isosurface at a level chosen to reproduce the
            rendered silhouettes (:func:`text3d.geometry.isosurface.auto_threshold`) unless one is given.
        bound: the density lives in ``[-bound, bound]^3``.
        n_samples: samples per ray of the volume renderer whose opacity the automatic level reproduces.
        source: what made it (``nerf``, ``dmtet``), for messages.
    """

    albedo: ColorFn
    mesh: TriMesh | None = None
    density: DensityFn | None = None
    bound: float = 1.0
    n_samples: int = 64
    source: str = ""
    roughness_metallic: ColorFn | None = None
    """PBR assets: ``points [N, 3] -> [N, 2]`` (roughness, metallic) in [0, 1]; ``albedo`` is then the base
    colour, sRGB-encoded. Export bakes them into glTF's ``metallicRoughnessTexture``."""
    environment: object | None = None
    """PBR assets: the learned light, ``float32 [H, 2H, 3]`` linear equirectangular radiance in Blender's world
    orientation (:mod:`text3d.render.pbr`); export writes it as ``<name>_environment.hdr``."""

    def __post_init__(self) -> None:
        if (self.mesh is None) == (self.density is None):
            raise ValueError("an Asset has exactly one of mesh and density")
