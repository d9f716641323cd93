"""Mesh clean-up for export: component filtering, decimation, outward orientation, and the placement into the
exported frame (centred, metres). The isosurface and its threshold are in :mod:`text3d.geometry.isosurface`.

**Frame.** text3d's world frame *is* glTF's (+Y up, the azimuth-0 view looks from +Z; see :mod:`text3d.cameras`),
so the only placement is a uniform scale and a translation (:func:`placement`): no rotation, the front already
faces +Z.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int

from text3d.errors import ExportError
from text3d.geometry.mesh import vertex_normals as torch_vertex_normals

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------------- clean-up
def face_areas(verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"]) -> Float[np.ndarray, "F"]:
    tri = verts[faces].astype(np.float64)
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)


def compact(
    verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"]
) -> tuple[Float[np.ndarray, "U 3"], Int[np.ndarray, "F 3"]]:
    """Drop vertices no face uses, renumbering the faces."""
    used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
    return verts[used], inverse.reshape(-1, 3).astype(np.int64)


def clean_mesh(
    verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"], min_component_fraction: float = 0.05
) -> tuple[Float[np.ndarray, "U 3"], Int[np.ndarray, "G 3"]]:
    """Weld duplicate vertices, collapse edges shorter than ``1e-5`` of the mesh's size, remove degenerate and
    duplicate faces, then connected pieces smaller than ``min_component_fraction`` of the total surface area (the
    largest piece is always kept), then unused vertices.

    Floaters are what a NeRF leaves in empty space and what xatlas chokes on; an asset made of several sizeable
    parts (a cup on a saucer) keeps all of them. Tiny faces are collapsed, not deleted: marching tets puts several
    crossings within ~1e-6 of each other where the field is zero near a grid vertex, and deleting such a face
    leaves a hole in a watertight surface (a 200² SDF fit's mesh had two). Faces of zero area with a long edge
    (needles) are kept for the same reason.

    Raises:
        ExportError: nothing is left.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    verts = np.asarray(verts, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if faces.shape[0] == 0:
        raise ExportError("the mesh is empty: there is no surface to export")
    # Weld exact duplicates, so a triangle soup is one piece and not thousands of "floaters".
    verts, weld = np.unique(verts, axis=0, return_inverse=True)
    faces = weld.reshape(-1)[faces]
    faces = faces[np.isfinite(verts[faces]).all(axis=(1, 2))]
    scale = float(np.ptp(verts[faces.reshape(-1)], axis=0).max()) if faces.size else 0.0
    faces = _collapse_short_edges(verts, faces, 1e-5 * scale)
    ok = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[ok]
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    first.sort()
    faces = faces[first]
    area = face_areas(verts, faces)
    if faces.shape[0] == 0 or not (area > 1e-12 * max(scale, 1e-12) ** 2).any():
        raise ExportError("every face of the mesh is degenerate: there is no surface to export")
    n = verts.shape[0]
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_matrix((np.ones(rows.shape[0], dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_label = labels[faces[:, 0]]
    comp_area = np.bincount(face_label, weights=area)
    kept = comp_area >= min_component_fraction * comp_area.sum()
    kept[np.argmax(comp_area)] = True
    dropped = int((~kept[np.unique(face_label)]).sum())
    if dropped:
        log.info("dropped %d small disconnected piece(s) of the mesh", dropped)
    faces = faces[kept[face_label]]
    return compact(verts, faces)


def _collapse_short_edges(
    verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"], tol: float
) -> Int[np.ndarray, "F 3"]:
    """Faces with the ends of every edge shorter than ``tol`` merged into one vertex (the lowest index of each
    group joined by short edges); the faces this makes degenerate are left for the caller to drop."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    short = edges[np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=-1) < tol]
    if short.shape[0] == 0:
        return faces
    n = verts.shape[0]
    graph = coo_matrix((np.ones(short.shape[0], dtype=np.int8), (short[:, 0], short[:, 1])), shape=(n, n))
    n_groups, group = connected_components(graph, directed=False)
    lowest = np.empty(n_groups, dtype=np.int64)
    lowest[group[::-1]] = np.arange(n)[::-1]  # the last write per group is its lowest index
    return lowest[group][faces]


def orient_outward(verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"]) -> Int[np.ndarray, "F 3"]:
    """Flip all faces if the signed volume is negative (inside-out mesh), so normals point outward."""
    tri = verts[faces].astype(np.float64)
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    return faces[:, ::-1].copy() if signed < 0 else faces


def decimate(
    verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"], target_faces: int
) -> tuple[Float[np.ndarray, "U 3"], Int[np.ndarray, "G 3"]]:
    """Quadric edge-collapse decimation (``fast_simplification``) to about ``target_faces``; no-op below it."""
    if target_faces <= 0 or faces.shape[0] <= target_faces:
        return verts, faces
    import fast_simplification

    v, f = fast_simplification.simplify(
        np.ascontiguousarray(verts, dtype=np.float32),
        np.ascontiguousarray(faces, dtype=np.int64),
        target_count=int(target_faces),
    )
    return compact(np.asarray(v, dtype=np.float32), np.asarray(f, dtype=np.int64))


def vertex_normals(
    verts: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"]
) -> Float[np.ndarray, "V 3"]:
    """Area-weighted unit vertex normals (:func:`text3d.geometry.mesh.vertex_normals`, in float64); vertices
    whose faces cancel out get +Y (never a zero vector, which glTF forbids)."""
    n = torch_vertex_normals(torch.from_numpy(np.asarray(verts, np.float64)), torch.from_numpy(faces).long())
    n = n.numpy()
    zero = np.linalg.norm(n, axis=-1) < 0.5
    n[zero] = (0.0, 1.0, 0.0)
    return n.astype(np.float32)


# ------------------------------------------------------------------------------------------------- placement
@dataclass(frozen=True)
class Placement:
    """``exported = R ((field_position - offset) * scale)``: the map from the field's frame to the file's, a
    similarity (``R`` a rotation, identity unless the asset goes back into a photo set's own frame)."""

    scale: float
    offset: tuple[float, float, float]
    rotation: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def apply(self, verts: Float[np.ndarray, "V 3"]) -> Float[np.ndarray, "V 3"]:
        moved = (verts - np.asarray(self.offset, dtype=np.float64)) * self.scale
        return (moved @ np.asarray(self.rotation, dtype=np.float64).T).astype(np.float32)

    def apply_normals(self, normals: Float[np.ndarray, "V 3"]) -> Float[np.ndarray, "V 3"]:
        return (normals @ np.asarray(self.rotation, dtype=np.float64).T).astype(np.float32)

    def invert(self, verts: Float[np.ndarray, "V 3"]) -> Float[np.ndarray, "V 3"]:
        back = verts @ np.asarray(self.rotation, dtype=np.float64)
        return (back / self.scale + np.asarray(self.offset, dtype=np.float64)).astype(np.float32)

    def matrix(self) -> Float[np.ndarray, "4 4"]:
        """The same map as a 4x4 matrix (float64)."""
        rot = np.asarray(self.rotation, dtype=np.float64)
        out = np.eye(4)
        out[:3, :3] = self.scale * rot
        out[:3, 3] = -self.scale * rot @ np.asarray(self.offset, dtype=np.float64)
        return out


def placement_from_matrix(matrix: Float[np.ndarray, "4 4"]) -> Placement:
    """The :class:`Placement` of a similarity ``[sR | t]`` (e.g. a photo set's map back to its own frame).

    Raises:
        ExportError: the matrix is not a similarity (sheared, mirrored or singular).
    """
    m = np.asarray(matrix, dtype=np.float64)
    lin = m[:3, :3]
    det = float(np.linalg.det(lin))
    if not np.isfinite(m).all() or det <= 0:
        raise ExportError(
            "the placement matrix is singular or mirrored; it must be a rotation, scale and shift"
        )
    scale = det ** (1.0 / 3.0)
    rot = lin / scale
    if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6):
        raise ExportError("the placement matrix is not a similarity (it shears or scales axes unevenly)")
    offset = -(rot.T @ m[:3, 3]) / scale
    return Placement(
        scale=scale,
        offset=tuple(float(x) for x in offset),
        rotation=tuple(tuple(float(x) for x in row) for row in rot),
    )


PLACEMENTS = ("center", "ground", "none")


def placement(verts: Float[np.ndarray, "V 3"], size: float, center: str = "center") -> Placement:
    """Scale so the largest bounding-box side is ``size`` metres (``size <= 0``: keep field units), and translate.

    Args:
        center: ``"center"``: the bounding-box centre goes to the origin; ``"ground"``: centred in X and Z with
            the lowest point at Y = 0 (stands on the floor in a game engine); ``"none"``: no translation.
    """
    if center not in PLACEMENTS:
        raise ExportError(f"export.center must be one of {', '.join(PLACEMENTS)}, got {center!r}")
    lo, hi = verts.min(axis=0).astype(np.float64), verts.max(axis=0).astype(np.float64)
    extent = float((hi - lo).max())
    scale = size / extent if size > 0 and extent > 0 else 1.0
    mid = 0.5 * (lo + hi)
    if center == "center":
        offset = mid
    elif center == "ground":
        offset = np.array([mid[0], lo[1], mid[2]])
    else:
        offset = np.zeros(3)
    return Placement(scale=scale, offset=tuple(float(x) for x in offset))
