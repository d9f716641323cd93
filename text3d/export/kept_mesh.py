"""Writing a user's own mesh back with a new base-colour texture (``text3d texture``): same vertices, same faces in
the same order, same UVs, in the file's frame and units.

- **OBJ** keeps positions and UVs as separate lists (``f v/vt``), exactly as an OBJ input had them: the ``v`` lines
  are the input's (``%.9g``: float32 round-trips exactly), the ``vt`` lines its UVs, the faces its faces.
- **GLB** needs one index per corner for all attributes, so a vertex with two UVs (a seam) is split
  (:func:`split_seams`); a GLB input has none to split and comes back vertex for vertex.

Both are staged and renamed together (:func:`text3d.export.writers.staged_files`): a failure leaves no file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float, Int

from text3d.export.mesh import vertex_normals
from text3d.export.texture import UVMesh, dilate
from text3d.export.writers import TexturedMesh, _rows, mtl_text, obj_file_names, staged_files, write_glb


@dataclass
class KeptMesh:
    """A mesh as the user gave it, with UVs (possibly new ones from xatlas).

    Attributes:
        positions: ``[V, 3]`` in the file's frame and units.
        faces: ``[F, 3]`` into ``positions``, the file's order.
        uvs: ``[T, 2]`` OpenGL UVs in [0, 1]; ``face_uvs``: ``[F, 3]`` into ``uvs``.
        normals: ``[V, 3]`` the file's normals, or ``None`` (area-weighted ones are computed).
    """

    positions: Float[np.ndarray, "V 3"]
    faces: Int[np.ndarray, "F 3"]
    uvs: Float[np.ndarray, "T 2"]
    face_uvs: Int[np.ndarray, "F 3"]
    normals: Float[np.ndarray, "V 3"] | None = None

    def corner_uvs(self) -> Float[np.ndarray, "F 3 2"]:
        return self.uvs[self.face_uvs]


def split_seams(mesh: KeptMesh) -> UVMesh:
    """One vertex per distinct (position, UV) pair, for formats with a single index list (glTF, the bake).

    When every face uses the same index for position and UV (a glTF input), nothing is split and the vertices
    stay in their order (unused ones included). Otherwise pairs are numbered by position index, then UV index.
    """
    if np.array_equal(mesh.faces, mesh.face_uvs) and mesh.uvs.shape[0] == mesh.positions.shape[0]:
        vmap = np.arange(mesh.positions.shape[0], dtype=np.int64)
        return UVMesh(
            mesh.positions.astype(np.float32), mesh.faces.astype(np.int64), mesh.uvs.astype(np.float32), vmap
        )
    key = mesh.faces.astype(np.int64) * mesh.uvs.shape[0] + mesh.face_uvs
    uniq, inverse = np.unique(key.reshape(-1), return_inverse=True)
    vmap = uniq // mesh.uvs.shape[0]
    tmap = uniq % mesh.uvs.shape[0]
    return UVMesh(
        positions=mesh.positions[vmap].astype(np.float32),
        faces=inverse.reshape(-1, 3).astype(np.int64),
        uvs=mesh.uvs[tmap].astype(np.float32),
        vmap=vmap.astype(np.int64),
    )


def uv_coverage(
    corner_uvs: Float[np.ndarray, "F 3 2"], size: int, device: torch.device | str = "cpu"
) -> Bool[np.ndarray, "S S"]:
    """Texels (row 0 = ``v = 1``) whose centre lies in some face's UV triangle, by the shared rasterizer."""
    from text3d.render.raster import rasterize

    uv = torch.as_tensor(corner_uvs.reshape(-1, 2), dtype=torch.float32, device=torch.device(device))
    clip = torch.cat([uv * 2.0 - 1.0, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], dim=-1)
    tri = torch.arange(uv.shape[0], device=uv.device).reshape(-1, 3)
    with torch.no_grad():
        rast = rasterize(clip[None], tri, (size, size))
    return (rast.triangle_id[0] >= 0).cpu().numpy()


def fill_outside_charts(
    image: Float[np.ndarray, "S S 3"], coverage: Bool[np.ndarray, "S S"], keep_texels: int = 2
) -> Float[np.ndarray, "S S 3"]:
    """Texels more than ``keep_texels`` outside the UV charts take the nearest kept texel's colour, so no
    untrained colour bleeds into a seam under bilinear filtering or mipmaps. The ring next to a chart is kept as
    trained: bilinear lookups inside the chart read it, so training gave it the right colour."""
    from scipy import ndimage

    if coverage.all() or not coverage.any():
        return image
    dist = ndimage.distance_transform_edt(~coverage)
    return dilate(image, dist <= keep_texels)


def write_kept_mesh(
    out_dir: str | Path,
    name: str,
    mesh: KeptMesh,
    texture_png: bytes,
    formats: tuple[str, ...] = ("glb", "obj"),
    extras: dict | None = None,
) -> list[Path]:
    """Write ``<name>.glb`` and / or ``<name>.obj`` + ``.mtl`` + ``_albedo.png`` (all or nothing)."""
    out_dir = Path(out_dir)
    files: list[Path] = []
    with staged_files() as st:
        if "glb" in formats:
            split = split_seams(mesh)
            normals = mesh.normals if mesh.normals is not None else vertex_normals(mesh.positions, mesh.faces)
            textured = TexturedMesh(
                positions=split.positions,
                normals=np.asarray(normals, dtype=np.float32)[split.vmap],
                uvs=split.uvs,
                faces=split.faces,
                texture_png=texture_png,
                name=name,
                extras={"units": "the input's", "frame": "the input's", **(extras or {})},
            )
            files.append(write_glb(st, out_dir / f"{name}.glb", textured))
        if "obj" in formats:
            obj_name, mtl_name, png_name = obj_file_names(name)
            f_v = mesh.faces.astype(np.int64) + 1
            f_t = mesh.face_uvs.astype(np.int64) + 1
            corners = np.stack([f_v, f_t], axis=-1).reshape(-1, 6)
            lines = [
                "# text3d texture: the input mesh (its vertices, faces and order) with a new base colour\n",
                f"# {mesh.positions.shape[0]} vertices, {f_v.shape[0]} faces\n",
                f"mtllib {mtl_name}\no {name}\n",
                _rows("v %.9g %.9g %.9g\n", mesh.positions.astype(np.float32).astype(np.float64)),
                _rows("vt %.9g %.9g\n", mesh.uvs.astype(np.float32).astype(np.float64)),
                f"usemtl {name}\n",
                _rows("f %d/%d %d/%d %d/%d\n", corners),
            ]
            st.path(out_dir / obj_name).write_text("".join(lines), encoding="utf-8")
            st.path(out_dir / mtl_name).write_text(mtl_text(name, png_name), encoding="utf-8")
            st.path(out_dir / png_name).write_bytes(texture_png)
            files += [out_dir / obj_name, out_dir / mtl_name, out_dir / png_name]
        st.commit()
    return files
