"""Scene normalisation: one similarity (uniform scale + translation) from text3d's world into the field's bound.

``p_norm = scale * p_world + translation``. It is recorded as plain data (``to_dict``, for run.json) and inverted
exactly, so a mesh extracted in the normalised frame goes back to the user's units and place. No rotation: the
frame's orientation is :mod:`text3d.data.frames`' job.

Where the object is, in order of preference (``method="auto"``):

1. ``"points"``: the sparse SfM points, a robust box (the 2nd..98th percentiles per axis), when there are >= 16.
2. ``"box"``: a box the input declares (instant-ngp's ``scale``/``offset`` unit cube).
3. ``"cameras"``: the point nearest to all optical axes in the least-squares sense (where the cameras look), and
   the largest sphere there that every camera sees whole, ``min_i(depth_i * sin(half_fov_i))``: an object
   visible in every photo fits inside it.

The chosen region's half-extent (box) or radius (sphere) maps to ``bound * (1 - margin)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class SceneNormalization:
    """``p_norm = scale * p_world + translation``; ``source`` says what it was fitted to."""

    scale: float = 1.0
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = "identity"
    bound: float = 1.0
    """The field's half-extent the scene was fitted into."""

    def matrix(self) -> np.ndarray:
        """``float64 [4, 4]``: world -> normalised."""
        m = np.eye(4)
        m[:3, :3] *= self.scale
        m[:3, 3] = self.translation
        return m

    def inverse_matrix(self) -> np.ndarray:
        """``float64 [4, 4]``: normalised -> world."""
        m = np.eye(4)
        m[:3, :3] /= self.scale
        m[:3, 3] = -np.asarray(self.translation) / self.scale
        return m

    def apply_points(self, p: Float[Tensor, "*N 3"]) -> Float[Tensor, "*N 3"]:
        t = torch.as_tensor(self.translation, dtype=p.dtype, device=p.device)
        return p * self.scale + t

    def invert_points(self, p: Float[Tensor, "*N 3"]) -> Float[Tensor, "*N 3"]:
        t = torch.as_tensor(self.translation, dtype=p.dtype, device=p.device)
        return (p - t) / self.scale

    def apply_c2w(self, c2w: Float[Tensor, "N 4 4"]) -> Float[Tensor, "N 4 4"]:
        """Camera-to-world matrices in the normalised frame: same rotation, moved and scaled centre."""
        out = c2w.clone()
        out[:, :3, 3] = self.apply_points(c2w[:, :3, 3])
        return out

    def invert_c2w(self, c2w: Float[Tensor, "N 4 4"]) -> Float[Tensor, "N 4 4"]:
        out = c2w.clone()
        out[:, :3, 3] = self.invert_points(c2w[:, :3, 3])
        return out

    def to_dict(self) -> dict:
        return {
            "scale": self.scale,
            "translation": list(self.translation),
            "source": self.source,
            "bound": self.bound,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SceneNormalization:
        return cls(
            float(d["scale"]), tuple(float(x) for x in d["translation"]), d["source"], float(d["bound"])
        )


def look_at_point(c2w: np.ndarray) -> tuple[np.ndarray, bool]:
    """The point nearest to every camera's optical axis (least squares), and whether it is well determined.

    Minimises ``sum_i |(I - d_i d_i^T)(p - o_i)|^2`` over ``p``, with ``o_i`` the centres and ``d_i`` the viewing
    directions (-Z columns). Nearly parallel axes (a forward-facing capture) make it ill-conditioned: then
    ``False`` and the cameras' centroid pushed one median camera spacing along the mean view direction.
    """
    o = c2w[:, :3, 3]
    d = -c2w[:, :3, 2]
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    a = proj.sum(0)
    b = (proj @ o[:, :, None]).sum(0)[:, 0]
    eig = np.linalg.eigvalsh(a)
    if eig[0] > 1e-3 * max(eig[-1], 1e-12):
        p = np.linalg.solve(a, b)
        if np.all(np.einsum("ni,ni->n", p[None] - o, d) > 0):  # in front of every camera
            return p, True
    spread = np.linalg.norm(o - o.mean(0), axis=-1)
    step = float(np.median(spread)) if len(o) > 1 and np.median(spread) > 0 else 1.0
    return o.mean(0) + d.mean(0) * step, False


def compute_normalization(
    c2w: Float[Tensor, "N 4 4"],
    half_fov: Float[Tensor, "N"],
    points: Float[Tensor, "P 3"] | None = None,
    *,
    box: tuple[np.ndarray, np.ndarray] | None = None,
    bound: float = 1.0,
    margin: float = 0.1,
    method: str = "auto",
) -> SceneNormalization:
    """Fit the similarity that puts the scene into ``[-bound, bound]^3`` with a relative ``margin``.

    Args:
        c2w: camera-to-world matrices in text3d's world (OpenGL camera axes).
        half_fov: each camera's smaller half field of view, radians.
        points: sparse 3D points in the same world, if any.
        box: ``(lo, hi)`` corners of a region the input declares (instant-ngp's unit cube), if any.
        bound, margin: the target cube's half-side and the fraction of it left free.
        method: ``"auto"``, ``"points"``, ``"box"``, ``"cameras"`` or ``"none"`` (see the module docstring).
    """
    target = bound * (1.0 - margin)
    if method == "none":
        return SceneNormalization(bound=bound)
    if method not in ("auto", "points", "box", "cameras"):
        raise ValueError(f"unknown normalisation method {method!r}")
    pts = None if points is None else points.detach().double().cpu().numpy()
    if method == "points" or (method == "auto" and pts is not None and len(pts) >= 16):
        if pts is None or len(pts) < 4:
            raise ValueError("normalisation from points needs sparse points")
        lo, hi = np.percentile(pts, 2, axis=0), np.percentile(pts, 98, axis=0)
        return _from_box(lo, hi, target, bound, "points")
    if method == "box" or (method == "auto" and box is not None):
        if box is None:
            raise ValueError("normalisation from a box needs one")
        return _from_box(np.asarray(box[0], np.float64), np.asarray(box[1], np.float64), target, bound, "box")
    m = c2w.detach().double().cpu().numpy()
    centre, ok = look_at_point(m)
    depth = np.einsum("ni,ni->n", centre[None] - m[:, :3, 3], -m[:, :3, 2])
    hf = half_fov.detach().double().cpu().numpy()
    radius = float(np.min(np.abs(depth) * np.sin(hf)))
    if not np.isfinite(radius) or radius <= 0:
        radius = float(np.linalg.norm(m[:, :3, 3] - centre, axis=-1).mean()) or 1.0
    scale = target / radius
    return SceneNormalization(
        scale, tuple(float(x) for x in -scale * centre), "cameras" if ok else "cameras_forward", bound
    )


def _from_box(lo: np.ndarray, hi: np.ndarray, target: float, bound: float, source: str) -> SceneNormalization:
    centre = (lo + hi) / 2
    half = float(np.max(hi - lo)) / 2
    scale = target / half if half > 0 else 1.0
    return SceneNormalization(scale, tuple(float(x) for x in -scale * centre), source, bound)
