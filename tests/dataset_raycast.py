"""An independent per-object id render of a ``text3d dataset`` image, for checking its labels.

Plain numpy ray casting (Möller-Trumbore), written without the project's rasterizer, scene code or asset loader:
each scene object is read from its file with ``trimesh`` (primitives are rebuilt with the same ``trimesh.creation``
calls), placed with the matrix the image's metadata records, and every pixel-centre ray takes the nearest hit.
Pixel ``(i, j)``'s ray goes through NDC ``x = (j + 0.5) * 2 / W - 1``, ``y = 1 - (i + 0.5) * 2 / H`` of an OpenGL
camera (looking down -Z) with the recorded vertical field of view.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

PRIMITIVES = {
    "primitive:box": lambda: trimesh.creation.box(extents=(1.0, 1.0, 1.0)),
    "primitive:icosphere": lambda: trimesh.creation.icosphere(subdivisions=2, radius=0.5),
    "primitive:cylinder": lambda: trimesh.creation.cylinder(radius=0.5, height=1.0, sections=24),
    "primitive:torus": lambda: trimesh.creation.torus(
        major_radius=0.35, minor_radius=0.15, major_sections=24, minor_sections=12
    ),
}

_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _mesh(asset: str) -> tuple[np.ndarray, np.ndarray]:
    if asset not in _CACHE:
        m = PRIMITIVES[asset]() if asset in PRIMITIVES else trimesh.load(asset, force="mesh", process=False)
        _CACHE[asset] = (np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64))
    return _CACHE[asset]


@dataclass
class IdRender:
    object_id: np.ndarray
    """``[H, W]`` nearest object per pixel, -1 for none."""
    alone: np.ndarray
    """``[K, H, W]`` bool: what each object would cover with nothing in front of it."""


def rays(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    size = meta["size"]
    c2w = np.asarray(meta["camera"]["c2w"], dtype=np.float64)
    tan = math.tan(math.radians(meta["camera"]["fovy_deg"]) / 2)
    centres = (np.arange(size) + 0.5) * 2 / size - 1
    x, y = np.meshgrid(centres, -centres)  # row 0 on top
    d_cam = np.stack([x * tan, y * tan, -np.ones_like(x)], -1).reshape(-1, 3)
    d = d_cam @ c2w[:3, :3].T
    return c2w[:3, 3], d / np.linalg.norm(d, axis=-1, keepdims=True)


def _hits(
    origin: np.ndarray, dirs: np.ndarray, tri: np.ndarray, eps: np.ndarray | float = 0.0, chunk: int = 1 << 20
) -> np.ndarray:
    """Nearest hit distance of each ray with any triangle (inf where none); both faces count. ``eps`` ``[T, 3]``
    lets a ray pass that far outside each edge, in barycentric units of the vertex opposite it."""
    best = np.full(dirs.shape[0], np.inf)
    if tri.shape[0] == 0:
        return best
    eps = np.broadcast_to(np.asarray(eps, dtype=np.float64), (tri.shape[0], 3))
    step = max(1, chunk // max(dirs.shape[0], 1))
    for s in range(0, tri.shape[0], step):
        e_w, e_u, e_v = (eps[s : s + step, k][None] for k in range(3))
        v0, v1, v2 = tri[s : s + step, 0], tri[s : s + step, 1], tri[s : s + step, 2]
        e1, e2 = v1 - v0, v2 - v0
        p = np.cross(dirs[:, None, :], e2[None])  # [R, T, 3]
        det = (e1[None] * p).sum(-1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tv = origin - v0  # [T, 3]
        u = (tv[None] * p).sum(-1) * inv
        q = np.cross(tv, e1)  # [T, 3]
        v = (dirs @ q.T) * inv
        t = (e2 * q).sum(-1)[None] * inv
        hit = ok & (u >= -e_u) & (v >= -e_v) & (u + v <= 1 + e_w) & (t > 1e-6)
        best = np.minimum(best, np.where(hit, t, np.inf).min(-1))
    return best


def _edge_margins(meta: dict, tri: np.ndarray, tol_px: float) -> np.ndarray:
    """``[T, 3]`` barycentric margins that put a pixel centre up to ``tol_px`` pixels outside an edge inside.

    A vertex's barycentric falls by 1 over the triangle's height from that vertex (in pixels), so the margin of
    vertex ``k`` is ``tol_px / height_k``, measured on the triangle's projection. Triangles reaching behind the
    camera get none.
    """
    if tol_px == 0:
        return np.zeros((tri.shape[0], 3))
    size = meta["size"]
    c2w = np.asarray(meta["camera"]["c2w"], dtype=np.float64)
    tan = math.tan(math.radians(meta["camera"]["fovy_deg"]) / 2)
    cam = (tri - c2w[:3, 3]) @ c2w[:3, :3]  # [T, 3, 3] in the camera frame
    depth = -cam[..., 2]
    front = (depth > 1e-9).all(-1)
    safe = np.where(depth > 1e-9, depth, 1.0)
    px = np.stack([cam[..., 0] / safe / tan, cam[..., 1] / safe / tan], -1) * (size / 2)  # [T, 3, 2]
    a, b, c = px[:, 0], px[:, 1], px[:, 2]
    area2 = np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])
    opposite = np.stack(
        [np.linalg.norm(c - b, axis=-1), np.linalg.norm(a - c, axis=-1), np.linalg.norm(b - a, axis=-1)], -1
    )
    height = area2[:, None] / np.maximum(opposite, 1e-12)
    return np.where(front[:, None] & (height > 1e-9), tol_px / np.maximum(height, 1e-9), 0.0)


def id_render(meta: dict, tol_px: float = 1e-6) -> IdRender:
    """Per-object id image of one dataset image, from its metadata and the asset files.

    A pixel centre counts as covered by a triangle up to ``tol_px`` pixels outside its edges: ``1e-6`` is the
    convention ``text3d.render.raster`` documents for float64 coverage, which the dataset's label pass uses on CPU
    (it keeps shared edges watertight), ``0`` the strict one.
    """
    size = meta["size"]
    origin, dirs = rays(meta)
    objs = meta["objects"]
    depth = np.full((len(objs), dirs.shape[0]), np.inf)
    for k, obj in enumerate(objs):
        verts, faces = _mesh(obj["asset"])
        m = np.asarray(obj["matrix"], dtype=np.float64)
        world = verts @ m[:3, :3].T + m[:3, 3]
        # Only rays that can reach the object's bounding sphere are traced.
        centre = (world.min(0) + world.max(0)) / 2
        radius = np.linalg.norm(world - centre, axis=-1).max()
        oc = centre - origin
        along = dirs @ oc
        near = (np.linalg.norm(oc) ** 2 - along**2) <= radius**2 * (1 + 1e-9)
        idx = np.flatnonzero(near)
        if idx.size:
            depth[k, idx] = _hits(origin, dirs[idx], world[faces], _edge_margins(meta, world[faces], tol_px))
    nearest = depth.argmin(0)
    has = np.isfinite(depth.min(0))
    object_id = np.where(has, nearest, -1).reshape(size, size)
    return IdRender(object_id, np.isfinite(depth).reshape(len(objs), size, size))


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def shoelace(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(0.5 * abs((x * np.roll(y, -1) - np.roll(x, -1) * y).sum()))


TIE_PX = (0.0, 1e-2)
"""The tie band: pixel centres within 1/100 pixel of an edge, either side of the convention. A dataset whose coverage
was decided in float32 (nvdiffrast, MPS) may put them either way; they are counted, not failed. The CPU label pass
(float64) puts none of them on the wrong side (``tests/test_dataset.py`` asserts 0)."""


def check_yolo_labels(det: Path | None, seg: Path | None, min_pixels: int, exact_from: int = 100) -> dict:
    """Compare a YOLO detect and/or segment dataset (same seed and config) with ray-cast id renders.

    Asserts, for every image: the labelled objects are exactly those with ``min_pixels`` visible pixels (up to tie
    pixels), class ids match names, and every pixel where the dataset's mask (its ``visible_pixels`` and polygon)
    differs from the ray cast (the 1/10^6-pixel edge convention) is a tie pixel. Returns the worst box IoU and
    polygon area error over objects with at least ``exact_from`` visible pixels (``worst_iou_untied``: over boxes
    no tie pixel can move; ``tie_boxes`` counts the others, whose edges are asserted to lie between the boxes
    without and with their tie pixels), the tie pixels that differ, and counts of the hard cases seen.
    """
    import yaml

    root = det or seg
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    stats = {"images": 0, "labels": 0, "hidden": 0, "truncated": 0, "joined_loops": 0, "tie_pixels": 0,
             "object_pixels": 0, "worst_iou": 1.0, "worst_iou_untied": 1.0, "tie_boxes": 0, "worst_area": 0.0,
             "checked_exact": 0}  # fmt: skip
    for meta_path in sorted((root / "meta").rglob("*.json")):
        meta = json.loads(meta_path.read_text())
        ref = id_render(meta)
        strict, loose = id_render(meta, TIE_PX[0]), id_render(meta, TIE_PX[1])
        tie = strict.object_id != loose.object_id
        size = meta["size"]
        stats["images"] += 1
        expected = []
        for k, obj in enumerate(meta["objects"]):
            mask = ref.object_id == k
            visible = int(mask.sum())
            # The dataset's count differs from the reference by tie pixels at most.
            slack = int((tie & ((strict.object_id == k) | (loose.object_id == k))).sum())
            assert abs(obj["visible_pixels"] - visible) <= slack, (
                meta["image"],
                k,
                obj["visible_pixels"],
                visible,
            )
            stats["tie_pixels"] += abs(obj["visible_pixels"] - visible)
            if obj["class_id"] is None:
                assert not obj["labelled"]
                continue
            assert names[obj["class_id"]] == obj["class_name"]
            if ref.alone[k].any() and visible == 0:
                stats["hidden"] += 1
            if obj["labelled"]:
                assert visible + slack >= min_pixels, (meta["image"], k, visible)
                tie_k = tie & ((strict.object_id == k) | (loose.object_id == k))
                expected.append((k, obj["class_id"], mask, slack, tie_k))
            else:
                assert visible - slack < min_pixels, (meta["image"], k, visible)
        rows = {}
        for name, folder in (("det", det), ("seg", seg)):
            if folder is not None:
                label = folder / meta["image"].replace("images/", "labels/", 1).replace(".jpg", ".txt")
                rows[name] = [[float(v) for v in line.split()] for line in label.read_text().splitlines()]
                assert len(rows[name]) == len(expected), (meta["image"], name)
        for n, (k, cls, mask, slack, tie_k) in enumerate(expected):
            box = tight_box(mask) if mask.any() else (0, 0, 0, 0)
            # Each box edge may move only as far as a tie pixel allows: between the boxes without and with them.
            inner = tight_box(mask & ~tie_k) if (mask & ~tie_k).any() else box
            outer = tight_box(mask | tie_k)
            boxes = []
            stats["labels"] += 1
            stats["object_pixels"] += int(mask.sum())
            stats["truncated"] += int(box[0] == 0 or box[1] == 0 or box[2] == size or box[3] == size)
            ious, area_err = [], 0.0
            if "det" in rows:
                d = rows["det"][n]
                assert int(d[0]) == cls
                xc, yc, w, h = (v * size for v in d[1:])
                boxes.append((xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2))
            if "seg" in rows:
                s = rows["seg"][n]
                assert int(s[0]) == cls
                pts = np.asarray(s[1:]).reshape(-1, 2) * size
                boxes.append((*pts.min(0), *pts.max(0)))
                area = shoelace(pts)
                assert abs(area - mask.sum()) <= slack + 0.01, (meta["image"], k, area, mask.sum())
                area_err = abs(area - mask.sum()) / max(mask.sum(), 1)
                stats["joined_loops"] += int(len(pts) != len(np.unique(pts, axis=0)))
            for b in boxes:
                ious.append(box_iou(b, box))
                lo = [min(i, o) for i, o in zip(inner, outer, strict=True)]
                hi = [max(i, o) for i, o in zip(inner, outer, strict=True)]
                assert all(lo[e] - 1e-3 <= b[e] <= hi[e] + 1e-3 for e in range(4)), (meta["image"], k, b, box)
            tied = inner != outer
            stats["tie_boxes"] += int(tied)
            if mask.sum() >= exact_from:
                stats["checked_exact"] += 1
                stats["worst_iou"] = min([stats["worst_iou"], *ious])
                if not tied:
                    stats["worst_iou_untied"] = min([stats["worst_iou_untied"], *ious])
                stats["worst_area"] = max(stats["worst_area"], area_err)
    return stats
