"""Differentiable triangle rasterization: nvdiffrast on CUDA when installed, a pure-PyTorch twin everywhere else.

Four functions, :func:`rasterize`, :func:`interpolate`, :func:`antialias` and :func:`texture`, with the signatures
and output layout of nvdiffrast's (``nvdiffrast.torch``), so the refine stage and the exporter never care which
backend ran. Backends (``backend=``):

- ``"nvdiffrast"``: the CUDA rasterizer of nvdiffrast (``pip install text3d[nvdiffrast]`` pulls
  ``diffrp-nvdiffrast``, which JIT-builds the CUDA sources with nvcc on first use; the official git install works
  too). Only for CUDA tensors.
- ``"torch"``: the twin below. CPU, CUDA and MPS; float32 or float64 (float64 for gradcheck).
- ``"auto"`` (default): nvdiffrast when it imports and the tensors are on CUDA, else the twin.

Asking for ``"nvdiffrast"`` where it cannot run raises :class:`text3d.errors.BackendUnavailableError`, unless
``fallback=True``, which warns once and uses the twin.

Conventions (identical for both backends):

- ``pos_clip`` is OpenGL clip space (``Cameras.mvp() @ [x, y, z, 1]``): ``[B, V, 4]`` (one mesh topology, ``B``
  vertex sets, nvdiffrast's "instanced mode"), or ``[V, 4]`` which is treated as ``B = 1``. ``tri`` is ``[F, 3]``
  integer vertex indices, shared by the batch.
- Images are ``[B, H, W, C]`` **top row first**, like every image in text3d (nvdiffrast's own output is bottom-up;
  it is flipped here). Pixel ``(row i, column j)`` has its centre at NDC ``x = (j + 0.5) * 2 / W - 1`` and
  ``y = 1 - (i + 0.5) * 2 / H``, the same rays as :meth:`text3d.cameras.Cameras.rays`.
- ``rast[..., 0:2] = (u, v)`` are perspective-correct barycentrics: an attribute interpolates as
  ``u * a0 + v * a1 + (1 - u - v) * a2`` over the triangle's vertices ``(a0, a1, a2)``. ``rast[..., 2]`` is the
  NDC depth ``z / w`` (in ``[-1, 1]``; smaller is nearer), ``rast[..., 3]`` is ``triangle index + 1`` as a float,
  ``0`` where no triangle covers the pixel centre. Uncovered pixels are all zeros.
- Both faces of a triangle are drawn (no back-face culling).
- :func:`texture`: ``uv = (0, 0)`` is the corner of texel ``tex[:, 0, 0]``; ``u`` runs along the width and ``v``
  along the rows, texel centres at ``(k + 0.5) / size`` (nvdiffrast's convention; glTF's ``v`` is flipped, which
  is the exporter's business).

How the twin works and why:

- **Visibility** (no gradient, discrete): every triangle is expanded into the pixels of its screen bounding box, in
  chunks of at most ``max_fragments`` fragments so memory stays bounded whatever the mesh, and each fragment that
  passes the three edge tests writes ``(depth bits << 32) | triangle`` into a per-pixel int64 z-buffer with
  ``scatter_reduce(amin)``: the nearest triangle wins in one vectorised pass.
- **Barycentrics** (differentiable): for the winning triangle of each covered pixel, perspective-correct
  barycentrics are recomputed from the clip-space vertex positions with autograd on. So gradients reach vertex
  positions through ``u, v`` and ``z / w`` exactly as through nvdiffrast's rasterize.
- **Silhouettes** (:func:`antialias`): the analytic edge term of nvdiffrast's antialias. For each pair of
  neighbouring pixels showing different triangles, the nearer triangle's silhouette edge that crosses the segment
  between the two pixel centres blends the two colours by where it crosses. The blend factor is a smooth
  function of the edge's endpoints, so an image loss moves silhouette vertices.
- Triangles reaching behind the camera (a vertex with ``w <= 0``) are clipped to the near plane for coverage, as
  nvdiffrast clips them, and their barycentrics come from 2D homogeneous edge functions, which need no division by
  a vertex's ``w``; fragments with ``z / w`` outside ``[-1, 1]`` are discarded by both. Antialiasing skips edges of
  such triangles.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from text3d.errors import BackendUnavailableError

Backend = Literal["auto", "torch", "nvdiffrast"]
_BACKENDS = ("auto", "torch", "nvdiffrast")

_INSIDE_TOL_PX = {torch.float32: 1e-3, torch.float64: 1e-6}
"""A pixel centre counts as inside a triangle up to this distance (pixels) outside an edge, by the dtype coverage is
decided in. Float32 rounding in the edge functions is ~1e-4 px at 2k resolution, float64's ~1e-12 px; the tolerance
makes shared edges watertight (no pinholes) and moves a silhouette by an invisible 1/1000 (1/10^6) pixel. Float64
is for exact labels (:mod:`text3d.dataset`): a tie pixel 1/1000 px outside an edge is a whole pixel of a box."""
_AA_EPS = 1.0 / 16.0
"""Antialias accepts edge crossings up to 1/16 pixel outside the segment between two pixel centres (nvdiffrast)."""


@dataclass
class Rasterization:
    """What :func:`rasterize` returns.

    Attributes:
        rast: ``[B, H, W, 4]`` = ``(u, v, z / w, triangle index + 1)``, top row first; differentiable w.r.t. the
            vertex positions through ``u, v, z / w``.
        backend: ``"torch"`` or ``"nvdiffrast"``: the backend that made it, which :func:`interpolate`,
            :func:`antialias` and :func:`texture` reuse when given this object.
    """

    rast: Float[Tensor, "B H W 4"]
    backend: str

    @property
    def resolution(self) -> tuple[int, int]:
        return self.rast.shape[1], self.rast.shape[2]

    @property
    def mask(self) -> Float[Tensor, "B H W 1"]:
        """1 where a triangle covers the pixel centre, else 0 (no gradient; :func:`antialias` it for one)."""
        return (self.rast[..., 3:] > 0).to(self.rast.dtype)

    @property
    def triangle_id(self) -> Int[Tensor, "B H W"]:
        """Index of the visible triangle, ``-1`` where empty."""
        return self.rast[..., 3].long() - 1


# ------------------------------------------------------------------------------------------------- backend choice
@functools.cache
def nvdiffrast_available() -> bool:
    """Whether ``nvdiffrast.torch`` imports (it may still fail to JIT-build on first use; see :func:`_context`)."""
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:
        return False
    return True


_CONTEXTS: dict[torch.device, object] = {}
_WARNED: set[str] = set()


def _context(device: torch.device):
    """One ``RasterizeCudaContext`` per device (creating it is what triggers nvdiffrast's JIT build)."""
    if device not in _CONTEXTS:
        import nvdiffrast.torch as dr

        _CONTEXTS[device] = dr.RasterizeCudaContext(device=device)
    return _CONTEXTS[device]


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_backend(backend: str, device: torch.device, fallback: bool = False) -> str:
    """The backend that will actually run: ``"torch"`` or ``"nvdiffrast"``.

    Args:
        backend: ``"auto"``, ``"torch"`` or ``"nvdiffrast"``.
        device: where the tensors are; nvdiffrast needs CUDA.
        fallback: when ``"nvdiffrast"`` is asked for and cannot run, use the twin (with a warning) instead of
            raising.

    Raises:
        BackendUnavailableError: nvdiffrast asked for, unavailable, and ``fallback`` is false.
        ValueError: an unknown backend name.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"unknown raster backend {backend!r}; choose one of {', '.join(_BACKENDS)}")
    if backend == "torch":
        return "torch"
    on_cuda = torch.device(device).type == "cuda"
    if backend == "auto":
        return "nvdiffrast" if on_cuda and nvdiffrast_available() else "torch"
    reason = None
    if not nvdiffrast_available():
        reason = "nvdiffrast is not installed; install it with pip install 'text3d[nvdiffrast]'"
    elif not on_cuda:
        reason = f"nvdiffrast needs CUDA tensors, these are on {torch.device(device)}"
    if reason is None:
        return "nvdiffrast"
    if fallback:
        _warn_once(f"{reason}; using the pure-PyTorch rasterizer instead")
        return "torch"
    raise BackendUnavailableError(
        f"{reason}, or choose the raster backend 'auto' or 'torch' (e.g. --set refine.raster_backend=auto)"
    )


def _batched(pos_clip: Tensor) -> Tensor:
    if pos_clip.dim() == 2:
        return pos_clip[None]
    if pos_clip.dim() != 3 or pos_clip.shape[-1] != 4:
        raise ValueError(f"pos_clip must be [B, V, 4] or [V, 4], got {tuple(pos_clip.shape)}")
    return pos_clip


def _to_pixels(pos: Float[Tensor, "*N 4"], height: int, width: int) -> Float[Tensor, "*N 3"]:
    """Clip space to ``(x, y, z/w)`` with pixel ``(row i, col j)``'s centre at ``x = j, y = i`` (row 0 on top)."""
    inv_w = 1.0 / pos[..., 3]
    x = (pos[..., 0] * inv_w + 1.0) * (0.5 * width) - 0.5
    y = (1.0 - pos[..., 1] * inv_w) * (0.5 * height) - 0.5
    return torch.stack([x, y, pos[..., 2] * inv_w], dim=-1)


# ------------------------------------------------------------------------------------------------------ rasterize
def rasterize(
    pos_clip: Float[Tensor, "B V 4"] | Float[Tensor, "V 4"],
    tri: Int[Tensor, "F 3"],
    resolution: tuple[int, int],
    backend: Backend = "auto",
    fallback: bool = False,
    max_fragments: int = 1 << 20,
) -> Rasterization:
    """Rasterize triangles given in clip space.

    Args:
        pos_clip: clip-space vertex positions (see the module docstring). The twin decides coverage in float64
            when they are float64 (a pixel centre up to 1e-6 px outside an edge is inside, instead of 1e-3 px in
            float32), for labels that must agree with exact geometry; nvdiffrast always takes float32.
        tri: ``[F, 3]`` vertex indices (any integer dtype).
        resolution: ``(H, W)`` in pixels.
        backend: ``"auto"``, ``"torch"`` or ``"nvdiffrast"``.
        fallback: use the twin when nvdiffrast is asked for but cannot run, instead of raising.
        max_fragments: twin only: (triangle, pixel) candidates processed at once; bounds memory
            (about 100 bytes each) without changing the result.

    Returns:
        :class:`Rasterization` with ``rast [B, H, W, 4]``, top row first.
    """
    pos = _batched(pos_clip)
    h, w = int(resolution[0]), int(resolution[1])
    which = resolve_backend(backend, pos.device, fallback)
    if which == "nvdiffrast":
        import nvdiffrast.torch as dr

        rast, _ = dr.rasterize(
            _context(pos.device), pos.float().contiguous(), tri.int().contiguous(), (h, w), grad_db=False
        )
        return Rasterization(rast.flip(1), "nvdiffrast")
    return Rasterization(_rasterize_torch(pos, tri.long(), h, w, max_fragments), "torch")


def _rasterize_torch(pos: Tensor, tri: Tensor, h: int, w: int, max_fragments: int) -> Tensor:
    with torch.no_grad():
        face = _visible_faces(pos.detach(), tri, h, w, max_fragments)  # [B, H*W], -1 = empty
    return _barycentrics(pos, tri, face, h, w)


def _clip_near(v: Float[Tensor, "K 3 4"]) -> tuple[Float[Tensor, "M 3 4"], Int[Tensor, "M"]]:
    """Clip triangles that reach behind the camera to the near plane ``z = -w`` (where ``w = near > 0``).

    Each triangle has one or two vertices in front of the plane (``z + w >= 0``); what is in front is one triangle or
    a quad split into two. Returns the pieces in clip space and, for each, the index of its triangle in ``v``. The
    pieces only decide coverage and depth; barycentrics are taken on the original triangle (:func:`_barycentrics`).
    """
    d = v[..., 2] + v[..., 3]  # [K, 3] signed distance to the near plane (clip units)
    inside = d >= 0
    odd_inside = inside.sum(-1) == 1  # one vertex in front; otherwise one behind
    odd = torch.where(odd_inside, inside.long().argmax(-1), (~inside).long().argmax(-1))  # the vertex alone
    order = (odd[:, None] + torch.arange(3, device=v.device)) % 3  # rotate: the lone vertex first
    a, b, c = (v.gather(1, order[:, k, None, None].expand(-1, 1, 4))[:, 0] for k in range(3))
    da, db, dc = (d.gather(1, order[:, k, None])[:, 0, None] for k in range(3))
    p_ab = a + (b - a) * (da / (da - db))  # where the edges from the lone vertex cross the plane
    p_ac = a + (c - a) * (da / (da - dc))
    k = torch.arange(v.shape[0], device=v.device)
    one = odd_inside
    pieces = [
        torch.stack([a[one], p_ab[one], p_ac[one]], dim=1),  # the lone vertex in front: a triangle
        torch.stack([p_ab[~one], b[~one], c[~one]], dim=1),  # the lone vertex behind: a quad, in two
        torch.stack([p_ab[~one], c[~one], p_ac[~one]], dim=1),
    ]
    return torch.cat(pieces), torch.cat([k[one], k[~one], k[~one]])


def _visible_faces(pos: Tensor, tri: Tensor, h: int, w: int, max_fragments: int) -> Tensor:
    """``[B, H*W]`` index of the nearest triangle covering each pixel centre, ``-1`` where none does.

    Triangles are grouped by bounding-box size into square power-of-two tiles (1, 2, 4, ... pixels a side), so
    each group tests a dense ``[faces, S*S]`` block by broadcasting, with no per-fragment gathers; a tile wastes at
    most 3/4 of its candidates on pixels outside the box.
    """
    b, n_faces = pos.shape[0], tri.shape[0]
    dev = pos.device
    empty_key = torch.iinfo(torch.int64).max
    zbuf = torch.full((b * h * w,), empty_key, dtype=torch.int64, device=dev)
    if n_faces == 0:
        return torch.full((b, h * w), -1, dtype=torch.long, device=dev)
    # Coverage is decided in float64 when the caller passes float64 (exact labels: text3d.dataset), else float32.
    v = (pos if pos.dtype == torch.float64 else pos.float())[:, tri].reshape(b * n_faces, 3, 4)  # [B*F, 3, 4]
    tol = _INSIDE_TOL_PX[v.dtype]
    front = (v[..., 3] > 0).all(dim=-1)  # [B*F]
    # Triangles reaching behind the camera are clipped to the near plane into pieces that keep their triangle's id.
    behind = ~front & ((v[..., 2] + v[..., 3]) >= 0).any(dim=-1)
    src = torch.arange(b * n_faces, device=dev)
    if bool(behind.any()):
        pieces, parent = _clip_near(v[behind])
        v = torch.cat([v[front], pieces])
        src = torch.cat([src[front], src[behind][parent]])
    ahead = (v[..., 3] > 0).all(dim=-1)  # [P]: what is left entirely behind the camera is skipped
    scr = _to_pixels(v, h, w)  # [P, 3, 3]
    scr = torch.where(ahead[:, None, None], scr, torch.zeros_like(scr))
    x, y, z = (t.contiguous() for t in scr.unbind(-1))  # each [P, 3]
    # Pixel centres within the tolerance of the bounding box are candidates too (an axis-aligned edge's tolerance).
    xmin = (x.amin(-1) - tol).ceil().clamp(min=0)
    xmax = (x.amax(-1) + tol).floor().clamp(max=w - 1)
    ymin = (y.amin(-1) - tol).ceil().clamp(min=0)
    ymax = (y.amax(-1) + tol).floor().clamp(max=h - 1)
    x0, y0 = x[..., 0], y[..., 0]
    area = (x[..., 1] - x0) * (y[..., 2] - y0) - (y[..., 1] - y0) * (x[..., 2] - x0)  # [P], 2x signed area
    valid = ahead & (area.abs() > 1e-12) & (xmax >= xmin) & (ymax >= ymin)
    valid &= ~((z < -1).all(-1) | (z > 1).all(-1))
    keep = valid.nonzero()[:, 0]
    if keep.numel() == 0:
        return torch.full((b, h * w), -1, dtype=torch.long, device=dev)

    def kept(t: Tensor) -> Tensor:
        return t[keep]

    x, y, z, area = kept(x), kept(y), kept(z), kept(area)  # [K, 3] / [K]
    x0, y0 = x[:, 0], y[:, 0]
    # Edge k is opposite vertex k: e_k(p) = (xb - xa)(py - ya) - (yb - ya)(px - xa), affine in
    # (dx, dy) = (px - x0, py - y0). Scaled by sign(area) / |edge|, it is the signed distance in pixels to the
    # edge's line, positive on the triangle's side.
    xa, ya = x.roll(-1, dims=-1), y.roll(-1, dims=-1)
    xb, yb = x.roll(-2, dims=-1), y.roll(-2, dims=-1)
    ea, eb = -(yb - ya), xb - xa
    ec = (xb - xa) * (y0[:, None] - ya) - (yb - ya) * (x0[:, None] - xa)
    norm = torch.sign(area)[:, None] / torch.sqrt(ea**2 + eb**2).clamp(min=1e-20)
    # NDC depth is affine in screen space: z(p) = sum_k (e_k(p) / area) z_k.
    zs = z / area[:, None]
    coef = torch.stack(
        [
            ea[:, 0] * norm[:, 0],
            ea[:, 1] * norm[:, 1],
            ea[:, 2] * norm[:, 2],
            (ea * zs).sum(-1),
            eb[:, 0] * norm[:, 0],
            eb[:, 1] * norm[:, 1],
            eb[:, 2] * norm[:, 2],
            (eb * zs).sum(-1),
            ec[:, 0] * norm[:, 0],
            ec[:, 1] * norm[:, 1],
            ec[:, 2] * norm[:, 2],
            (ec * zs).sum(-1),
        ],
        dim=0,
    ).reshape(3, 4, -1)  # [d/ddx | d/ddy | const, edge0..2 + depth, K]
    fx0, fy0 = kept(xmin).long(), kept(ymin).long()
    fx1, fy1 = kept(xmax).long(), kept(ymax).long()
    size = torch.maximum(fx1 - fx0, fy1 - fy0) + 1
    level = torch.ceil(torch.log2(size.float())).long()  # float32: MPS has no float64
    level = level + ((1 << level) < size).long()  # exact ceil(log2) despite rounding
    level = level - ((level > 0) & ((1 << (level - 1).clamp(min=0)) >= size)).long()
    face_id = src[keep] % n_faces
    pix_base = (src[keep] // n_faces) * (h * w)
    for lv in torch.unique(level).tolist():
        tile = 1 << lv
        offs = torch.arange(tile * tile, device=dev)
        ox, oy = offs % tile, offs // tile  # [S*S]
        group = (level == lv).nonzero()[:, 0]
        for c in group.split(max(1, max_fragments // (tile * tile))):
            px = fx0[c, None] + ox  # [Nc, S*S]
            py = fy0[c, None] + oy
            dx = (px - fx0[c, None]).to(x0.dtype) + (fx0[c] - x0[c])[:, None]
            dy = (py - fy0[c, None]).to(y0.dtype) + (fy0[c] - y0[c])[:, None]
            cc = coef[:, :, c]  # [3, 4, Nc]
            ok = (px <= fx1[c, None]) & (py <= fy1[c, None])
            for e in range(3):
                dist = cc[0, e, :, None] * dx + cc[1, e, :, None] * dy + cc[2, e, :, None]
                ok &= dist >= -tol
            depth = cc[0, 3, :, None] * dx + cc[1, 3, :, None] * dy + cc[2, 3, :, None]
            ok &= (depth >= -1.0) & (depth <= 1.0)
            fi, ti = ok.nonzero(as_tuple=True)
            if fi.numel() == 0:
                continue
            # depth + 2 is in [1, 3]: positive floats order like their bit patterns.
            zbits = (depth[fi, ti].float() + 2.0).view(torch.int32).long()
            key = (zbits << 32) | face_id[c[fi]]
            pix = pix_base[c[fi]] + py[fi, ti] * w + px[fi, ti]
            zbuf.scatter_reduce_(0, pix, key, reduce="amin")
    face = torch.where(zbuf == empty_key, torch.full_like(zbuf, -1), zbuf & 0xFFFFFFFF)
    return face.reshape(b, h * w)


def _barycentrics(pos: Tensor, tri: Tensor, face: Tensor, h: int, w: int) -> Tensor:
    """``rast [B, H, W, 4]`` for the given visible faces, differentiable w.r.t. ``pos``."""
    b = pos.shape[0]
    covered = face >= 0
    bi, pi = covered.nonzero(as_tuple=True)  # pixels that show a triangle
    f = face[bi, pi]
    v = pos[bi[:, None], tri[f]]  # [N, 3, 4]
    # The pixel centre in NDC, and the 2D homogeneous edge functions (Olano & Greer): with vertices (X, Y, W) in clip
    # space, lambda_k = det(v_{k+1}, v_{k+2}, p) is proportional to the perspective-correct barycentric of vertex k.
    # No division by a vertex's w, so a triangle reaching behind the camera (clipped in _visible_faces) is exact.
    px = ((pi % w).to(pos.dtype) + 0.5) * (2.0 / w) - 1.0
    py = 1.0 - ((pi // w).to(pos.dtype) + 0.5) * (2.0 / h)
    x, y, ww = v[..., 0], v[..., 1], v[..., 3]
    xa, ya, wa = x.roll(-1, dims=-1), y.roll(-1, dims=-1), ww.roll(-1, dims=-1)
    xb, yb, wb = x.roll(-2, dims=-1), y.roll(-2, dims=-1), ww.roll(-2, dims=-1)
    px, py = px[:, None], py[:, None]
    lam = xa * (yb - py * wb) - ya * (xb - px * wb) + wa * (xb * py - yb * px)  # [N, 3]
    persp = lam / lam.sum(dim=-1, keepdim=True)  # perspective-correct barycentrics
    zw = (persp * v[..., 2]).sum(dim=-1) / (persp * ww).sum(dim=-1)  # NDC depth z / w at the pixel
    vals = torch.stack([persp[:, 0], persp[:, 1], zw, (f + 1).to(pos.dtype)], dim=-1)  # [N, 4]
    rast = pos.new_zeros(b * h * w, 4).index_put((bi * (h * w) + pi,), vals)
    return rast.reshape(b, h, w, 4)


# ---------------------------------------------------------------------------------------------------- interpolate
def _rast_tensor(rast: Rasterization | Tensor) -> tuple[Tensor, str | None]:
    if isinstance(rast, Rasterization):
        return rast.rast, rast.backend
    return rast, None


def interpolate(
    attr: Float[Tensor, "B V C"] | Float[Tensor, "V C"],
    rast: Rasterization | Float[Tensor, "B H W 4"],
    tri: Int[Tensor, "F 3"],
    backend: Backend = "auto",
) -> Float[Tensor, "B H W C"]:
    """Per-pixel attributes ``u * a0 + v * a1 + (1 - u - v) * a2`` of the visible triangle; 0 where empty.

    Differentiable w.r.t. ``attr`` and, through ``rast``, the vertex positions. A :class:`Rasterization` brings
    its own backend; a plain ``rast`` tensor uses ``backend``.
    """
    r, made_by = _rast_tensor(rast)
    which = made_by or resolve_backend(backend, r.device, fallback=True)
    if attr.dim() == 2:
        attr = attr[None]
    if which == "nvdiffrast":
        import nvdiffrast.torch as dr

        # Interpolation is per pixel, so the row order of rast does not matter.
        out, _ = dr.interpolate(attr.float().contiguous(), r.contiguous(), tri.int().contiguous())
        return out
    return _interpolate_torch(attr, r, tri.long())


def _interpolate_torch(attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
    b, h, w, _ = rast.shape
    n_verts, c = attr.shape[-2], attr.shape[-1]
    face = rast[..., 3].detach().long() - 1  # [B, H, W]
    covered = face >= 0
    vidx = tri[face.clamp(min=0)]  # [B, H, W, 3]
    if attr.shape[0] == 1 and b > 1:
        flat, offset = attr[0], torch.zeros(b, dtype=torch.long, device=attr.device)
    else:
        flat = attr.reshape(-1, c)
        offset = torch.arange(b, device=attr.device) * n_verts
    vals = flat[vidx + offset[:, None, None, None]]  # [B, H, W, 3, C]
    u, v = rast[..., 0], rast[..., 1]
    weights = torch.stack([u, v, 1.0 - u - v], dim=-1) * covered[..., None].to(rast.dtype)
    return (weights.to(vals.dtype)[..., None] * vals).sum(dim=-2)


# ------------------------------------------------------------------------------------------------------ antialias
def edge_opposites(tri: Int[Tensor, "F 3"]) -> Int[Tensor, "F 3"]:
    """For edge ``k`` of each face (the edge opposite vertex ``k``), the third vertex of the face on the other side.

    ``-1`` for boundary edges and edges shared by more than two faces: antialias treats those as silhouettes
    always, as nvdiffrast does. Depends only on the topology, so callers may cache it.
    """
    tri = tri.long()
    n = tri.shape[0]
    if n == 0:
        return tri.new_full((0, 3), -1)
    a = tri.roll(-1, dims=1)  # edge k runs v_{k+1} -> v_{k+2}
    b = tri.roll(-2, dims=1)
    lo, hi = torch.minimum(a, b).flatten(), torch.maximum(a, b).flatten()  # [3F]
    n_verts = int(tri.max()) + 1
    key = lo * n_verts + hi
    order = torch.argsort(key)
    sk = key[order]
    _, inverse, counts = torch.unique_consecutive(sk, return_inverse=True, return_counts=True)
    pair = counts[inverse] == 2  # sorted positions whose edge has exactly two faces
    first = torch.ones_like(sk, dtype=torch.bool)
    first[1:] = sk[1:] != sk[:-1]
    partner = torch.where(
        first, torch.arange(sk.numel(), device=sk.device) + 1, torch.arange(sk.numel(), device=sk.device) - 1
    )
    partner = partner.clamp(max=sk.numel() - 1)
    opposite_vertex = tri.flatten()  # the vertex opposite edge (f, k) is tri[f, k]
    result = torch.full_like(key, -1)
    result[order[pair]] = opposite_vertex[order[partner[pair]]]
    return result.reshape(n, 3)


def antialias(
    color: Float[Tensor, "B H W C"],
    rast: Rasterization | Float[Tensor, "B H W 4"],
    pos_clip: Float[Tensor, "B V 4"] | Float[Tensor, "V 4"],
    tri: Int[Tensor, "F 3"],
    backend: Backend = "auto",
    opposites: Int[Tensor, "F 3"] | None = None,
) -> Float[Tensor, "B H W C"]:
    """Blend colours across silhouette edges by the edge's sub-pixel position (nvdiffrast's antialias).

    This is what gives vertex positions gradients from image losses at object boundaries: without it the
    coverage mask is a step function of the vertex positions. Interior edges between two triangles facing the
    same way are left alone.

    Args:
        color: shaded image, top row first (e.g. the composite over the background).
        rast: the rasterization ``color`` was computed from.
        pos_clip, tri: the same positions and triangles given to :func:`rasterize`.
        opposites: twin only: :func:`edge_opposites` of ``tri``, if the caller caches it.
    """
    r, made_by = _rast_tensor(rast)
    which = made_by or resolve_backend(backend, r.device, fallback=True)
    pos = _batched(pos_clip)
    if which == "nvdiffrast":
        import nvdiffrast.torch as dr

        out = dr.antialias(
            color.float().flip(1).contiguous(),
            r.flip(1).contiguous(),
            pos.float().contiguous(),
            tri.int().contiguous(),
        )
        return out.flip(1)
    if opposites is None:
        opposites = edge_opposites(tri)
    return _antialias_torch(color, r, pos, tri.long(), opposites.long())


def _antialias_torch(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, opposites: Tensor) -> Tensor:
    b, h, w, c = color.shape
    face = rast[..., 3].detach().long() - 1  # [B, H, W]
    depth = rast[..., 2].detach()
    flat = color.reshape(-1, c)
    n_verts = pos.shape[1]
    pos_flat = pos.reshape(-1, 4)
    out = flat
    for down in (False, True):
        f0 = face[:, :-1, :] if down else face[:, :, :-1]
        f1 = face[:, 1:, :] if down else face[:, :, 1:]
        bi, yi, xi = (f0 != f1).nonzero(as_tuple=True)
        if bi.numel() == 0:
            continue
        pix0 = (bi * h + yi) * w + xi
        pix1 = pix0 + (w if down else 1)
        t0, t1 = f0[bi, yi, xi], f1[bi, yi, xi]
        z0 = depth.reshape(-1)[pix0]
        z1 = depth.reshape(-1)[pix1]
        # The nearer triangle (or the only one) owns the edge; measure from the pixel that shows it.
        use1 = (t0 < 0) | ((t1 >= 0) & (z1 <= z0))
        t = torch.where(use1, t1, t0)
        ds = torch.where(use1, -1.0, 1.0).to(pos.dtype)
        px = xi + use1.long() * (0 if down else 1)
        py = yi + use1.long() * (1 if down else 0)
        vid = tri[t]  # [N, 3]
        opp = opposites[t]  # [N, 3]
        base = (bi * n_verts)[:, None]
        p = _to_pixels(pos_flat[vid + base], h, w)[..., :2]  # [N, 3, 2]
        o = _to_pixels(pos_flat[torch.where(opp >= 0, opp, vid) + base], h, w)[..., :2]
        centre = torch.stack([px, py], dim=-1).to(pos.dtype)[:, None, :]
        p = p - centre
        o = o - centre
        x, y = p[..., 0], p[..., 1]
        xa, ya = x.roll(-1, dims=-1), y.roll(-1, dims=-1)
        xb, yb = x.roll(-2, dims=-1), y.roll(-2, dims=-1)
        # Silhouette test: the wing vertex across edge k lies on the same side as the triangle (a fold), or
        # there is no wing (boundary edge: the wing is the vertex itself, which passes trivially).
        bb = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
        wing = (xa - o[..., 0]) * (yb - o[..., 1]) - (xb - o[..., 0]) * (ya - o[..., 1])  # [N, 3]
        silhouette = torch.signbit(wing.detach()) == torch.signbit(bb.detach())[:, None]
        if down:  # measure along the column: swap the axes
            xa, ya, xb, yb = ya, xa, yb, xb
        dx, dy = xb - xa, yb - ya
        straddles = torch.signbit(ya.detach()) != torch.signbit(yb.detach())
        safe_dy = torch.where(straddles, dy, torch.ones_like(dy))
        # Where edge k crosses the line through the two pixel centres, in pixels towards the neighbour.
        cross = ds[:, None] * (xa - ya * dx / safe_dy)
        cross_nd = cross.detach().masked_fill(~straddles, -float("inf"))
        k = cross_nd.argmax(dim=-1, keepdim=True)  # the first edge the segment leaves the triangle through
        dc = cross.gather(-1, k)[:, 0]
        # Edges of a triangle (or wing) reaching behind the camera have no meaningful screen position: skip them.
        in_front = (pos_flat[vid + base][..., 3] > 0).all(-1)
        in_front &= (pos_flat[torch.where(opp >= 0, opp, vid) + base][..., 3] > 0).all(-1)
        ok = (
            in_front
            & straddles.gather(-1, k)[:, 0]
            & silhouette.gather(-1, k)[:, 0]
            & (dy.detach().abs() >= dx.detach().abs()).gather(-1, k)[:, 0]
            & (dc.detach() > -_AA_EPS)
            & (dc.detach() < 1.0 + _AA_EPS)
        )
        if not bool(ok.any()):
            continue
        dc = dc[ok].clamp(0.0, 1.0)
        alpha = ds[ok] * (0.5 - dc)
        p0, p1 = pix0[ok], pix1[ok]
        delta = alpha[:, None].to(color.dtype) * (flat[p1] - flat[p0])
        target = torch.where(alpha.detach() > 0, p0, p1)
        out = out.index_add(0, target, delta)
    return out.reshape(b, h, w, c)


# -------------------------------------------------------------------------------------------------------- texture
def texture(
    tex: Float[Tensor, "B Ht Wt C"],
    uv: Float[Tensor, "B H W 2"],
    boundary_mode: Literal["wrap", "clamp"] = "wrap",
    backend: Backend = "auto",
) -> Float[Tensor, "B H W C"]:
    """Bilinear texture lookup (nvdiffrast's ``texture`` with ``filter_mode="linear"``).

    ``tex`` with batch 1 is shared by every image in ``uv``. ``boundary_mode`` ``"wrap"`` repeats the texture
    (nvdiffrast's default); ``"clamp"`` repeats the border texels.
    """
    which = resolve_backend(backend, uv.device, fallback=True)
    if which == "nvdiffrast":
        import nvdiffrast.torch as dr

        return dr.texture(
            tex.float().contiguous(),
            uv.float().contiguous(),
            filter_mode="linear",
            boundary_mode=boundary_mode,
        )
    if boundary_mode not in ("wrap", "clamp"):
        raise ValueError(f"boundary_mode must be 'wrap' or 'clamp', got {boundary_mode!r}")
    b = uv.shape[0]
    tb, th, tw, c = tex.shape
    x = uv[..., 0] * tw - 0.5
    y = uv[..., 1] * th - 0.5
    x0f, y0f = x.detach().floor(), y.detach().floor()
    fx, fy = (x - x0f)[..., None], (y - y0f)[..., None]
    x0, y0 = x0f.long(), y0f.long()

    def fix(i: Tensor, n: int) -> Tensor:
        return torch.remainder(i, n) if boundary_mode == "wrap" else i.clamp(0, n - 1)

    xs, ys = (fix(x0, tw), fix(x0 + 1, tw)), (fix(y0, th), fix(y0 + 1, th))
    flat = tex.reshape(tb, th * tw, c)
    if tb == 1 and b > 1:
        flat = flat.expand(b, th * tw, c)

    def fetch(yi: Tensor, xi: Tensor) -> Tensor:
        idx = (yi * tw + xi).reshape(b, -1, 1).expand(-1, -1, c)
        return torch.gather(flat, 1, idx).reshape(*yi.shape, c)

    top = fetch(ys[0], xs[0]) * (1 - fx) + fetch(ys[0], xs[1]) * fx
    bottom = fetch(ys[1], xs[0]) * (1 - fx) + fetch(ys[1], xs[1]) * fx
    return top * (1 - fy) + bottom * fy
