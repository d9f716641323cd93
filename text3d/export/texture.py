"""UV unwrapping (xatlas), texture baking in UV space, seam dilation and sRGB PNG encoding.

The bake rasterizes the mesh *in UV space* with the shared rasterizer (:mod:`text3d.render.raster`): every
triangle is drawn at its UV coordinates, the 3D positions are interpolated to the texel centres, and the albedo
field is queried there. Texels just outside the charts (the ones bilinear filtering and mipmaps read at chart
borders) are baked too, by extending the nearest triangle a few texels past its edge; the rest of the empty atlas is
filled with the nearest baked colour, so no background colour can bleed into a seam at any mip level.

UV convention in this module: OpenGL/OBJ (``v`` up, ``v = 1`` is the top row of the image, which is row 0). That
matches the rasterizer's clip space (``y = +1`` is row 0) when ``clip = 2 * uv - 1``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor

from text3d.devices import query_chunk
from text3d.errors import ExportError
from text3d.export.mesh import face_areas

log = logging.getLogger(__name__)

AlbedoFn = Callable[[Tensor], Tensor]
"""``albedo_fn(points [N, 3]) -> colours [N, 3]`` in [0, 1], e.g. :meth:`text3d.fields.nerf.NeRFField.albedo`."""


@dataclass
class UVMesh:
    """A mesh with UVs. Vertices on seams are duplicated, so every vertex has exactly one UV.

    Attributes:
        positions: ``[V', 3]`` float32, in the same frame as the input of :func:`unwrap`.
        faces: ``[F, 3]`` int64 into ``positions``.
        uvs: ``[V', 2]`` float32 in ``[0, 1]``, OpenGL convention.
        vmap: ``[V']`` int64: the input vertex each output vertex copies (to carry normals and colours over).
    """

    positions: Float[np.ndarray, "V 3"]
    faces: Int[np.ndarray, "F 3"]
    uvs: Float[np.ndarray, "V 2"]
    vmap: Int[np.ndarray, "V"]


# -------------------------------------------------------------------------------------------------------- unwrap
def _pieces(centroids: np.ndarray, n_pieces: int, seed: int = 0) -> np.ndarray:
    """Face labels of ``n_pieces`` spatially compact pieces (k-means on the face centroids)."""
    if n_pieces <= 1:
        return np.zeros(len(centroids), dtype=np.int64)
    import warnings

    from scipy.cluster.vq import kmeans2

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # "one of the clusters is empty": harmless, that piece is just skipped
        _, labels = kmeans2(centroids.astype(np.float64), n_pieces, minit="++", iter=5, seed=seed)
    return labels.astype(np.int64)


def unwrap(
    verts: Float[np.ndarray, "V 3"],
    faces: Int[np.ndarray, "F 3"],
    texture_size: int = 1024,
    padding: int = 2,
    faces_per_piece: int = 8000,
    max_charts: int = 1000,
) -> UVMesh:
    """UV-unwrap a mesh with xatlas into one square atlas.

    xatlas' chart growing and per-chart LSCM get superlinearly slower as meshes and charts grow (a smooth
    200k-face mesh takes minutes with the defaults). So the mesh is cut into spatially compact pieces of about
    ``faces_per_piece`` faces that xatlas charts independently (and in parallel), and charts are capped at
    ``1 / max_charts`` of the surface area, before one pack of all charts into a ``texture_size`` square atlas
    with ``padding`` texels between charts. The 200k-face case takes a few seconds this way.

    Raises:
        ExportError: an empty mesh, or xatlas could not fit the charts into one atlas.
    """
    import xatlas

    verts = np.ascontiguousarray(verts, dtype=np.float32)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    if faces.shape[0] == 0:
        raise ExportError("cannot UV-unwrap an empty mesh")
    tri = verts[faces]
    area = face_areas(verts, faces).sum()
    n_pieces = max(1, round(faces.shape[0] / faces_per_piece))
    labels = _pieces(tri.mean(axis=1), n_pieces)
    atlas = xatlas.Atlas()
    piece_verts: list[np.ndarray] = []
    piece_faces: list[np.ndarray] = []
    for k in range(n_pieces):
        sel = faces[labels == k]
        if sel.shape[0] == 0:
            continue
        used, local = np.unique(sel, return_inverse=True)
        atlas.add_mesh(verts[used], local.reshape(-1, 3).astype(np.uint32))
        piece_verts.append(used)
        piece_faces.append(sel)
    chart = xatlas.ChartOptions()
    # Small textures cannot afford many charts: each one costs a padding border.
    fit = int((texture_size / (8 * max(1, padding))) ** 2)
    chart.max_chart_area = float(area) / max(1, min(max_charts, faces.shape[0] // 16, fit))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(chart_options=chart, pack_options=pack)
    if atlas.atlas_count != 1:
        log.info(
            "xatlas needed %d atlases at %d px; packing into one instead", atlas.atlas_count, texture_size
        )
        pack.resolution = 0  # one atlas of whatever size the estimated texel density needs
        atlas.generate(chart_options=chart, pack_options=pack)
        if atlas.atlas_count != 1:
            raise ExportError(f"xatlas could not pack the mesh into one atlas ({atlas.atlas_count})")
    out_pos, out_faces, out_uv, out_map = [], [], [], []
    base = 0
    for i, used in enumerate(piece_verts):
        vmapping, indices, uvs = atlas[i]
        vmap = used[vmapping.astype(np.int64)]
        out_map.append(vmap)
        out_pos.append(verts[vmap])
        out_uv.append(uvs.astype(np.float32))
        out_faces.append(indices.astype(np.int64) + base)
        base += vmapping.shape[0]
    uv = np.clip(np.concatenate(out_uv), 0.0, 1.0)
    return UVMesh(
        positions=np.concatenate(out_pos),
        faces=np.concatenate(out_faces),
        uvs=uv,
        vmap=np.concatenate(out_map),
    )


# ----------------------------------------------------------------------------------------------------------- bake
@dataclass
class BakedTexture:
    """``image [H, W, 3]`` float in [0, 1] (row 0 = top = ``v`` 1); ``coverage [H, W]``: texels inside a chart."""

    image: Float[np.ndarray, "H W 3"]
    coverage: Bool[np.ndarray, "H W"]


def _query(albedo_fn: AlbedoFn, pts: Tensor, chunk: int) -> Tensor:
    if pts.shape[0] == 0:
        return pts.new_zeros(0, 3)
    with torch.no_grad():
        return torch.cat([albedo_fn(c).float().clamp(0, 1) for c in pts.split(chunk)], dim=0)


def bake_texture(
    uvmesh: UVMesh,
    albedo_fn: AlbedoFn,
    size: int = 1024,
    device: torch.device | str = "cpu",
    dilate_texels: int = 2,
    chunk: int | None = None,
) -> BakedTexture:
    """Bake ``albedo_fn`` into a ``size`` square texture over ``uvmesh``'s UVs.

    Args:
        albedo_fn: queried at 3D points in ``uvmesh.positions``' frame (the field's frame), on ``device``.
        dilate_texels: texels outside the charts that are baked from the nearest triangle extended past its edge
            (bilinear filtering and the first mip levels read them). Everything further out is filled with the
            nearest baked colour.
        chunk: points per ``albedo_fn`` call (bounds memory); default ``devices.query_chunk(device)``.
    """
    from scipy import ndimage

    from text3d.render.raster import interpolate, rasterize

    dev = torch.device(device)
    chunk = chunk or query_chunk(dev)
    pos = torch.as_tensor(uvmesh.positions, dtype=torch.float32, device=dev)
    tri = torch.as_tensor(uvmesh.faces, dtype=torch.long, device=dev)
    uv = torch.as_tensor(uvmesh.uvs, dtype=torch.float32, device=dev)
    clip = torch.cat([uv * 2.0 - 1.0, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], dim=-1)
    with torch.no_grad():
        rast = rasterize(clip[None], tri, (size, size))
        xyz = interpolate(pos[None], rast, tri)[0]  # [H, W, 3]
        face = rast.triangle_id[0]  # [H, W], -1 outside the charts
    covered = face >= 0
    image = torch.zeros(size, size, 3, device=dev)
    image[covered] = _query(albedo_fn, xyz[covered], chunk)

    covered_np = covered.cpu().numpy()
    if not covered_np.any():
        raise ExportError("the UV atlas covers no texel; the mesh is degenerate (all faces have zero area)")
    # Ring of texels just outside the charts: extend the nearest chart texel's triangle to them.
    dist, (ni, nj) = ndimage.distance_transform_edt(~covered_np, return_indices=True)
    ring = (~covered_np) & (dist <= dilate_texels)
    ri, rj = np.nonzero(ring)
    if ri.size:
        f = face[torch.as_tensor(ni[ri, rj], device=dev), torch.as_tensor(nj[ri, rj], device=dev)]
        centre = torch.stack(
            [
                (torch.as_tensor(rj, device=dev, dtype=torch.float32) + 0.5) / size,
                1.0 - (torch.as_tensor(ri, device=dev, dtype=torch.float32) + 0.5) / size,
            ],
            dim=-1,
        )
        bary = _clamped_barycentrics(centre, uv[tri[f]])  # [N, 3]
        pts = (bary[..., None] * pos[tri[f]]).sum(dim=1)
        image[torch.as_tensor(ri, device=dev), torch.as_tensor(rj, device=dev)] = _query(
            albedo_fn, pts, chunk
        )
    baked = covered_np | ring
    img = image.cpu().numpy()
    img = dilate(img, baked)
    return BakedTexture(image=img, coverage=covered_np)


def _clamped_barycentrics(p: Float[Tensor, "N 2"], tri_uv: Float[Tensor, "N 3 2"]) -> Float[Tensor, "N 3"]:
    """Barycentrics of ``p`` in each triangle, clamped to the triangle (so extrapolation never leaves the face).

    Clamping and renormalising is not the exact closest point, but for points within a few texels of an edge it
    lands on that edge, which is all the ring bake needs.
    """
    a, b, c = tri_uv.unbind(dim=1)
    v0, v1, v2 = b - a, c - a, p - a
    d00 = (v0 * v0).sum(-1)
    d01 = (v0 * v1).sum(-1)
    d11 = (v1 * v1).sum(-1)
    d20 = (v2 * v0).sum(-1)
    d21 = (v2 * v1).sum(-1)
    den = d00 * d11 - d01 * d01
    den = torch.where(den.abs() < 1e-30, torch.ones_like(den), den)
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    bary = torch.stack([1.0 - w1 - w2, w1, w2], dim=-1).clamp(min=0.0)
    total = bary.sum(-1, keepdim=True)
    return torch.where(total > 0, bary / total.clamp(min=1e-12), torch.full_like(bary, 1.0 / 3.0))


def dilate(image: Float[np.ndarray, "H W C"], valid: Bool[np.ndarray, "H W"]) -> Float[np.ndarray, "H W C"]:
    """Fill every invalid texel with the colour of the nearest valid one (exact Euclidean nearest).

    A full fill rather than a few steps of dilation: mip levels average ever larger blocks, and any texel left at
    the background colour would eventually bleed into a seam.
    """
    from scipy import ndimage

    if valid.all() or not valid.any():
        return image
    _, (ni, nj) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return image[ni, nj]


# ------------------------------------------------------------------------------------------------------------ PNG
def to_uint8(image: Float[np.ndarray, "H W C"]) -> UInt8[np.ndarray, "H W C"]:
    """[0, 1] floats to 8-bit, rounding to nearest (no gamma change: the values are already sRGB-encoded)."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_png(image: UInt8[np.ndarray, "H W 3"]) -> bytes:
    """PNG bytes tagged as sRGB (an ``sRGB`` chunk plus the matching ``gAMA`` for older readers)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add(b"sRGB", b"\x00")  # rendering intent: perceptual
    info.add(b"gAMA", (45455).to_bytes(4, "big"))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", pnginfo=info, compress_level=6)
    return buf.getvalue()


def vertex_colors(
    positions: Float[np.ndarray, "V 3"], albedo_fn: AlbedoFn, device: torch.device | str = "cpu"
) -> UInt8[np.ndarray, "V 3"]:
    """8-bit sRGB colours of ``albedo_fn`` at the vertices (for the vertex-coloured PLY)."""
    pts = torch.as_tensor(np.asarray(positions), dtype=torch.float32, device=torch.device(device))
    return to_uint8(_query(albedo_fn, pts, 1 << 18).cpu().numpy())
