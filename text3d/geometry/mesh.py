"""Triangle meshes and small differentiable operations on them: normals and the refine stage's smoothness
regularisers.

Meshes are ``verts [V, 3]`` float and ``faces [F, 3]`` long, counter-clockwise seen from outside (so
``cross(v1 - v0, v2 - v0)`` points outward), which is what :func:`text3d.geometry.tets.marching_tets` produces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


@dataclass
class TriMesh:
    """A triangle mesh: ``verts [V, 3]``, ``faces [F, 3]`` (long, counter-clockwise seen from outside)."""

    verts: Float[Tensor, "V 3"]
    faces: Int[Tensor, "F 3"]

    @property
    def is_empty(self) -> bool:
        return self.faces.shape[0] == 0


def face_normals(verts: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "F 3"]:
    """Unit outward normals of the faces."""
    v0, v1, v2 = (verts[faces[:, i]] for i in range(3))
    return F.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1, eps=1e-20)


def vertex_normals(verts: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "V 3"]:
    """Area-weighted average of the adjacent faces' normals, normalised (smooth shading normals)."""
    v0, v1, v2 = (verts[faces[:, i]] for i in range(3))
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)  # length = 2 * area: the area weighting comes for free
    acc = torch.zeros_like(verts).index_add(0, faces.reshape(-1), n.repeat_interleave(3, dim=0))
    return F.normalize(acc, dim=-1, eps=1e-20)


def edge_face_pairs(faces: Int[Tensor, "F 3"]) -> Int[Tensor, "E 2"]:
    """Pairs of faces that share an edge (edges with exactly two faces; boundary and non-manifold edges skipped)."""
    if faces.shape[0] == 0:
        return faces.new_zeros(0, 2)
    a = faces.roll(-1, dims=1).reshape(-1)
    b = faces.roll(-2, dims=1).reshape(-1)
    n_verts = int(faces.max()) + 1
    key = torch.minimum(a, b) * n_verts + torch.maximum(a, b)
    order = torch.argsort(key)
    sk = key[order]
    _, counts = torch.unique_consecutive(sk, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    two = starts[counts == 2]
    face_of = torch.arange(faces.shape[0], device=faces.device).repeat_interleave(3)
    return torch.stack([face_of[order[two]], face_of[order[two + 1]]], dim=1)


def normal_consistency(verts: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, ""]:
    """Mean ``1 - cos`` of the angle between the normals of faces sharing an edge (0 for a flat sheet)."""
    pairs = edge_face_pairs(faces)
    if pairs.shape[0] == 0:
        return verts.sum() * 0.0
    n = face_normals(verts, faces)
    return (1.0 - (n[pairs[:, 0]] * n[pairs[:, 1]]).sum(-1)).mean()


def laplacian_smoothness(verts: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, ""]:
    """Mean squared length of the uniform Laplacian ``v - mean(neighbours)``: small when the surface is smooth."""
    if faces.shape[0] == 0:
        return verts.sum() * 0.0
    src = torch.cat([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    dst = torch.cat([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    # Each interior edge appears once per adjacent face in each direction; the doubled weights cancel in the mean.
    total = torch.zeros_like(verts).index_add(0, src, verts[dst])
    count = torch.zeros(verts.shape[0], device=verts.device, dtype=verts.dtype).index_add(
        0, src, torch.ones_like(src, dtype=verts.dtype)
    )
    used = count > 0
    lap = verts[used] - total[used] / count[used, None]
    return (lap**2).sum(-1).mean()
