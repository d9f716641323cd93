"""An independent check of a UV unwrap: charts inside the unit square, none collapsed, none folded, none overlapping.

Written in plain numpy on purpose, without the project's rasterizer: the bake draws UV triangles with that
rasterizer and keeps only the front-most one per texel, so it could never show two charts on the same texel.
Here every triangle is scan-converted on its own and coverage is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass
class UVReport:
    """What :func:`check_uvs` found. ``ok`` only when every count is zero.

    Attributes:
        n_charts: charts (faces joined through shared UV vertices).
        out_of_range: UV vertices outside ``[0, 1]^2`` (or not finite).
        collapsed: faces whose UV area is below ``min_area_ratio`` times what their 3D area asks for (a chart
            squashed to a line or a point; the texture has no texel for that part of the surface).
        flipped: faces wound against the rest of their chart (a fold inside a chart).
        overlap_texels: texel centres strictly inside two or more UV triangles (two charts, or one folded chart,
            on the same texels: one colour would be baked for two places on the surface).
        overlap_charts: pairs of distinct charts that share at least one texel.
    """

    n_charts: int
    out_of_range: int
    collapsed: int
    flipped: int
    overlap_texels: int
    overlap_charts: int

    @property
    def ok(self) -> bool:
        return not (self.out_of_range or self.collapsed or self.flipped or self.overlap_texels)


def charts(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """``[F]`` chart label of each face: faces sharing a (UV-)vertex are in one chart."""
    f = faces.shape[0]
    rows = np.repeat(np.arange(f), 3)
    graph = coo_matrix((np.ones(3 * f), (rows, f + faces.reshape(-1))), shape=(f + n_vertices,) * 2)
    _, labels = connected_components(graph, directed=False)
    return labels[:f]


def _signed_area(p: np.ndarray) -> np.ndarray:
    """``[F, 3, 2] -> [F]``: twice the signed area of each 2D triangle."""
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]


def _texels(tri: np.ndarray, size: int, eps: float = 1e-7):
    """For each ``[3, 2]`` triangle in texel units: ``(rows, cols)`` of the texel centres strictly inside it.

    Strictly (all barycentrics above ``eps``): a centre on an edge that two neighbouring triangles share counts
    for neither, so a clean chart covers every texel at most once. Degenerate triangles cover nothing.
    """
    for t, a2 in zip(tri, _signed_area(tri), strict=True):
        if abs(a2) < 1e-12:
            yield np.zeros(0, np.int64), np.zeros(0, np.int64)
            continue
        lo = np.clip(np.floor(t.min(axis=0) - 0.5).astype(int), 0, size - 1)
        hi = np.clip(np.ceil(t.max(axis=0) - 0.5).astype(int), 0, size - 1)
        rows, cols = np.mgrid[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1]
        px, py = cols + 0.5, rows + 0.5  # texel (i, j) has its centre at (j + 0.5, i + 0.5)
        inside = np.ones(px.shape, bool)
        for k in range(3):
            a, b = t[(k + 1) % 3], t[(k + 2) % 3]  # the edge opposite vertex k
            w = ((b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0])) / a2
            inside &= w > eps
        yield rows[inside], cols[inside]


def check_uvs(
    positions: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    size: int = 256,
    min_area_ratio: float = 0.02,
) -> UVReport:
    """Check an unwrap (``positions [V, 3]``, ``faces [F, 3]``, ``uvs [V, 2]``, one UV per vertex).

    ``min_area_ratio``: a face fails as collapsed when its share of the UV area is below this fraction of its share
    of the 3D area. LSCM stretches triangles by small factors; a collapsed chart has ratio 0.
    """
    positions, uvs = np.asarray(positions, np.float64), np.asarray(uvs, np.float64)
    faces = np.asarray(faces, np.int64)
    labels = charts(faces, len(uvs))
    out_of_range = int((~np.isfinite(uvs).all(axis=1) | (uvs < 0).any(axis=1) | (uvs > 1).any(axis=1)).sum())

    uv_area = 0.5 * _signed_area(uvs[faces])
    p = positions[faces]
    area3d = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    density = np.abs(uv_area).sum() / max(area3d.sum(), 1e-30)  # UV area per unit of surface, on average
    collapsed = int((np.abs(uv_area) < min_area_ratio * density * area3d).sum())

    # A chart's winding is the sign of its summed area; a face wound the other way is folded over.
    chart_sign = np.sign(np.bincount(labels, weights=uv_area))
    flipped = int(((np.sign(uv_area) * chart_sign[labels]) < 0).sum())

    # Scan-convert every triangle on its own; count coverage, and note which charts meet on a texel.
    cover = np.zeros((size, size), np.int32)
    owner = np.full((size, size), -1, np.int64)
    pairs: set[tuple[int, int]] = set()
    for chart, (rows, cols) in zip(labels, _texels(uvs[faces] * size, size), strict=True):
        cover[rows, cols] += 1
        before = owner[rows, cols]
        pairs.update(
            (int(min(c, chart)), int(max(c, chart))) for c in np.unique(before) if c >= 0 and c != chart
        )
        owner[rows, cols] = np.where(before >= 0, before, chart)
    return UVReport(
        n_charts=int(labels.max()) + 1 if len(labels) else 0,
        out_of_range=out_of_range,
        collapsed=collapsed,
        flipped=flipped,
        overlap_texels=int((cover > 1).sum()),
        overlap_charts=len(pairs),
    )
