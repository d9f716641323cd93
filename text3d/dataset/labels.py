"""Exact labels from the per-pixel object ids of a render: visible masks, tight boxes, polygons, COCO RLE.

A pixel belongs to an object when that object's triangle covers the pixel centre nearest to the camera, so masks
are occlusion-aware and cut at the image border by construction. Pixel ``(row i, column j)`` is the square
``[j, j + 1] x [i, i + 1]``; boxes and polygons are in those units (YOLO divides them by the image size).

Polygons trace the *cracks* between pixels (:func:`trace_loops`), so a polygon's area is exactly the mask's pixel
count, holes included. Ultralytics wants one polygon per row; like its own COCO converter
(``ultralytics.data.converter.merge_multi_segment``) the outer boundary, holes and separate pieces are joined into
one ring by zero-width cuts between their nearest vertices (:func:`merge_loops`). A hole traced in the opposite
direction stays empty under any fill rule, and the cuts add no area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Float, Int

# Edge directions in (x, y) with y down, and which neighbour must be empty for a pixel side to be a boundary.
_SIDES = (
    # (neighbour di, dj), start offset (x, y), end offset (x, y): walked clockwise on screen, outer area > 0
    ((-1, 0), (0, 0), (1, 0)),  # top
    ((0, 1), (1, 0), (1, 1)),  # right
    ((1, 0), (1, 1), (0, 1)),  # bottom
    ((0, -1), (0, 1), (0, 0)),  # left
)


@dataclass
class ObjectLabel:
    """The label of one visible object.

    Attributes:
        index: the object's index in its scene.
        class_id: index into the class names.
        pixels: visible pixel count (the mask's area).
        box: ``(x0, y0, x1, y1)`` pixel edges of the tight box of the visible pixels.
        polygon: ``[N, 2]`` ``(x, y)`` vertices of one ring (pixel units), or ``None`` when not asked for.
    """

    index: int
    class_id: int
    pixels: int
    box: tuple[int, int, int, int]
    polygon: Float[np.ndarray, "N 2"] | None = None


def tight_box(mask: Bool[np.ndarray, "H W"]) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the pixel edges around the ``True`` pixels (exclusive ends)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def trace_loops(mask: Bool[np.ndarray, "H W"]) -> list[Int[np.ndarray, "N 2"]]:
    """Closed boundary loops of a mask along pixel edges, corners only, as ``(x, y)`` integer vertices.

    Outer boundaries have positive shoelace area (y down), holes negative; the signed areas sum to the pixel
    count. Where two pixels touch only at a corner the loops turn so the pieces stay separate (4-connectivity).
    """
    h, w = mask.shape
    padded = np.pad(mask, 1)
    starts, ends = [], []
    ii, jj = np.nonzero(mask)
    for (di, dj), s, e in _SIDES:
        empty = ~padded[ii + 1 + di, jj + 1 + dj]
        i, j = ii[empty], jj[empty]
        starts.append(np.stack([j + s[0], i + s[1]], -1))
        ends.append(np.stack([j + e[0], i + e[1]], -1))
    start = np.concatenate(starts)
    end = np.concatenate(ends)
    n = start.shape[0]
    if n == 0:
        return []
    key = lambda p: p[:, 1].astype(np.int64) * (w + 1) + p[:, 0]  # noqa: E731
    start_key, end_key = key(start), key(end)
    order = np.argsort(start_key, kind="stable")
    sorted_keys = start_key[order]
    first = np.searchsorted(sorted_keys, end_key, side="left")
    count = np.searchsorted(sorted_keys, end_key, side="right") - first
    cand0 = order[first]
    cand1 = order[np.minimum(first + 1, n - 1)]
    # At a corner with two outgoing edges, take the right turn (y down: (dx, dy) -> (-dy, dx)).
    d_in = end - start
    right = np.stack([-d_in[:, 1], d_in[:, 0]], -1)
    d1 = end[cand1] - start[cand1]
    take1 = (count == 2) & (d1 == right).all(-1)
    nxt = np.where(take1, cand1, cand0)
    seen = np.zeros(n, dtype=bool)
    loops = []
    direction = end - start
    for e0 in range(n):
        if seen[e0]:
            continue
        chain = []
        e = e0
        while not seen[e]:
            seen[e] = True
            chain.append(e)
            e = nxt[e]
        chain = np.asarray(chain)
        d = direction[chain]
        turn = (d != np.roll(d, 1, axis=0)).any(-1)  # keep a vertex only where the direction changes
        loops.append(start[chain[turn]])
    return loops


def ring_area(ring: Float[np.ndarray, "N 2"]) -> float:
    """Signed shoelace area (positive for outer loops, y down)."""
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return float(0.5 * (x * np.roll(y, -1) - np.roll(x, -1) * y).sum())


def merge_loops(loops: list[np.ndarray]) -> Float[np.ndarray, "N 2"]:
    """Join loops into one ring by cuts between nearest vertices, biggest loop first (Ultralytics' way)."""
    from scipy.spatial import cKDTree

    ordered = sorted(loops, key=lambda r: -abs(ring_area(r)))
    ring = ordered[0].astype(np.float64)
    for loop in ordered[1:]:
        dist, idx = cKDTree(ring).query(loop.astype(np.float64))
        j = int(np.argmin(dist))
        i = int(idx[j])
        walk = np.concatenate([loop[j:], loop[: j + 1]]).astype(np.float64)
        ring = np.concatenate([ring[: i + 1], walk, ring[i:]])
    return ring


def extract_labels(
    object_id: Int[np.ndarray, "H W"],
    class_ids: list[int],
    min_pixels: int,
    polygons: bool = False,
) -> tuple[list[ObjectLabel], Int[np.ndarray, "K"]]:
    """Labels of the objects with at least ``min_pixels`` visible pixels (distractors, ``class_id < 0``, never).

    Args:
        object_id: ``[H, W]`` object index per pixel, ``-1`` for background.
        class_ids: class id of each scene object, ``-1`` for distractors.
        polygons: also trace each object's polygon (segmentation formats).

    Returns:
        The labels, and the visible pixel count of every scene object (also the unlabelled ones).
    """
    k = len(class_ids)
    counts = np.bincount(object_id[object_id >= 0].ravel(), minlength=k)[:k]
    labels = []
    for idx, cls in enumerate(class_ids):
        if cls < 0 or counts[idx] < min_pixels:
            continue
        mask = object_id == idx
        poly = merge_loops(trace_loops(mask)) if polygons else None
        labels.append(ObjectLabel(idx, int(cls), int(counts[idx]), tight_box(mask), poly))
    return labels, counts


def yolo_rows(labels: list[ObjectLabel], width: int, height: int, segment: bool) -> str:
    """An Ultralytics label file: ``cls xc yc w h`` rows, or ``cls x1 y1 ... xn yn`` rows (normalised)."""
    lines = []
    for lab in labels:
        if segment:
            pts = lab.polygon / np.array([width, height], dtype=np.float64)
            lines.append(f"{lab.class_id} " + " ".join(f"{v:.6f}" for v in pts.ravel()))
        else:
            x0, y0, x1, y1 = lab.box
            xc, yc = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
            lines.append(f"{lab.class_id} {xc:.6f} {yc:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return "".join(line + "\n" for line in lines)


def rle_counts(mask: Bool[np.ndarray, "H W"]) -> list[int]:
    """COCO run lengths: column-major, starting with a (possibly empty) run of zeros."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string (``maskApi.c`` ``rleToString``: deltas in 5-bit groups, offset 48)."""
    out = []
    for i, x in enumerate(counts):
        x = int(x) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_decode(rle: dict) -> Bool[np.ndarray, "H W"]:
    """A mask from COCO RLE (compressed string or counts list); for readers and tests."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, str):
        vals, p = [], 0
        while p < len(counts):
            x, k, more = 0, 0, True
            while more:
                c = ord(counts[p]) - 48
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p += 1
                k += 1
                if not more and (c & 0x10):
                    x |= -1 << (5 * k)
            if len(vals) > 2:
                x += vals[-2]
            vals.append(x)
        counts = vals
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for c in counts:
        if val:
            flat[pos : pos + c] = True
        pos += c
        val = not val
    return flat.reshape((w, h)).T


def coco_annotation(lab: ObjectLabel, mask: Bool[np.ndarray, "H W"], masks: str) -> dict:
    """COCO fields of one object: pixel ``bbox [x, y, w, h]``, ``area``, and ``segmentation`` (RLE or polygon)."""
    x0, y0, x1, y1 = lab.box
    if masks == "rle":
        h, w = mask.shape
        seg: dict | list = {"size": [h, w], "counts": rle_string(rle_counts(mask))}
    else:
        seg = [[round(float(v), 2) for v in lab.polygon.ravel()]]
    return {
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": lab.pixels,
        "segmentation": seg,
        "iscrowd": 0,
        "category_id": lab.class_id + 1,
    }
