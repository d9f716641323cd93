"""Multi-resolution hash-grid encoding (Instant-NGP) in pure PyTorch.

No tiny-cuda-nn: this runs on CPU, CUDA and MPS alike and installs from the registry. Each level ``l`` has a
grid of resolution ``N_l = floor(base * b**l)``; coarse levels small enough to fit the table are indexed densely,
finer levels through the spatial hash ``xor(x*1, y*2654435761, z*805459861) mod T``. Features of the 8 cell corners
are blended trilinearly, so the output is linear in the table and piecewise trilinear in the position
(``gradcheck`` passes for points inside a cell).

Two implementations of the same maths, bit-identical on CPU (``tests/test_field_speed.py``):

- :meth:`HashGridEncoding.forward_reference`: point-major ``[N, L, 8]`` indices in int64, ``F.embedding`` and a
  flat ``scatter_add_`` backward. Used on every device but the CPU, for tables whose rows are not 2 floats, and
  for positions that need a gradient (DMTet's surface points, analytic normals, pose refinement): the CPU path's
  other layout sums the position gradient in another order, which changes its last bits.
- the CPU path: level-major ``[L, N, 8]`` int32 indices built axis-major (points innermost, so every broadcast
  is vectorised), the two features of a row read and accumulated as one complex number (half the index traffic,
  no flat index to build), and the interpolation fused into one autograd node that works level by level in
  chunks of :data:`CPU_CHUNK` points (one level's block of the table and one chunk's weights stay in cache),
  with a serial ``index_add_`` backward. Per table row the gradient's additions happen in the same order as in
  the reference (rows belong to one level, and within a level the order is point, then corner), so the sums are
  bit-identical and deterministic with any thread count. 3-4x the issue-19 start's forward + backward
  (docs/benchmarks.md, issue 19).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

_PRIMES = (1, 2654435761, 805459861)


@dataclass(frozen=True)
class HashGridConfig:
    """Instant-NGP defaults as used by threestudio (16 levels x 2 features, table 2^19)."""

    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048
    init_scale: float = 1e-4
    """Table entries start uniform in +-init_scale, so the field starts from the MLP's bias (and the blob)."""

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features_per_level


class _GatherRows(torch.autograd.Function):
    """``table[idx]`` with a cheaper backward: the gather is ``F.embedding`` and the gradient is one ``scatter_add``
    into the flattened table, instead of ``index_put_(accumulate=True)`` (what indexing's backward runs). Same values;
    deterministic on CPU. On the 2-core CPU, for 5M lookups into the 2^19 x 16-level table: forward 181 -> 86 ms,
    backward 423 -> ~150 ms with deterministic algorithms on (as every CPU run has them)."""

    @staticmethod
    def forward(ctx, table: Float[Tensor, "T F"], idx: Tensor) -> Tensor:
        ctx.save_for_backward(idx)
        ctx.rows = table.shape[0]
        return F.embedding(idx, table)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (idx,) = ctx.saved_tensors
        f = grad.shape[-1]
        flat = (idx.reshape(-1, 1) * f + torch.arange(f, device=idx.device)).reshape(-1)
        table_grad = grad.new_zeros(ctx.rows * f).scatter_add_(0, flat, grad.reshape(-1))
        return table_grad.view(ctx.rows, f), None


class HashGridEncoding(nn.Module):
    """Maps positions in ``[0, 1]^3`` to ``n_levels * n_features_per_level`` features."""

    def __init__(self, cfg: HashGridConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = cfg
        growth = (
            math.exp((math.log(cfg.max_resolution) - math.log(cfg.base_resolution)) / (cfg.n_levels - 1))
            if cfg.n_levels > 1
            else 1.0
        )
        table_size = 2**cfg.log2_hashmap_size
        resolutions, sizes, dense = [], [], []
        for level in range(cfg.n_levels):
            res = int(math.floor(cfg.base_resolution * growth**level))
            n_dense = (res + 1) ** 3
            resolutions.append(res)
            sizes.append(min(n_dense, table_size))
            dense.append(n_dense <= table_size)
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.resolutions = resolutions
        self.sizes = sizes
        self.dense = dense
        self.offsets = offsets
        self.embeddings = nn.Parameter(
            torch.empty(offsets[-1], cfg.n_features_per_level, dtype=dtype).uniform_(
                -cfg.init_scale, cfg.init_scale
            )
        )
        # Per-level constants as tensors, so one pass covers all levels (a few dozen kernels instead of ~400).
        n_dense = sum(dense)
        if dense != [True] * n_dense + [False] * (cfg.n_levels - n_dense):
            raise AssertionError("dense levels must come first")  # resolutions grow with the level
        self.n_dense = n_dense
        strides = torch.tensor([[1, r + 1, (r + 1) ** 2] for r in resolutions[:n_dense]], dtype=torch.long)
        self.register_buffer("res", torch.tensor(resolutions, dtype=torch.float32), persistent=False)  # [L]
        self.register_buffer("dense_strides", strides.reshape(n_dense, 3), persistent=False)  # [Ld, 3]
        self.register_buffer("primes", torch.tensor(_PRIMES, dtype=torch.long), persistent=False)  # [3]
        self.register_buffer("hash_sizes", torch.tensor(sizes[n_dense:], dtype=torch.long), persistent=False)
        self.register_buffer("level_offsets", torch.tensor(offsets[:-1], dtype=torch.long), persistent=False)
        # CPU path: hashed levels are blocks of ``table_size`` rows from ``split`` on.
        self.table_size = table_size
        self.split = offsets[n_dense]
        self.index_dtype = torch.int32 if offsets[-1] < 2**31 else torch.long  # int32: half the index traffic
        starts = [k * table_size for k in range(cfg.n_levels - n_dense)]
        self.register_buffer("hashed_starts", torch.tensor(starts, dtype=torch.long), persistent=False)

    level_weights: Tensor | None = None
    """Per-level feature weights ``[L]`` (coarse-to-fine); ``None``: all ones."""

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    @staticmethod
    def _corners(per_axis: Tensor, combine: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """``[N, L, 3, 2]`` per-axis values (lower, upper corner) -> ``[N, L, 8]`` over the cell's corners, corner
        ``i`` taking axis x from bit 2, y from bit 1 and z from bit 0 of ``i``."""
        xs = per_axis[:, :, 0, :, None, None]
        ys = per_axis[:, :, 1, None, :, None]
        zs = per_axis[:, :, 2, None, None, :]
        return combine(combine(xs, ys), zs).flatten(2)

    def forward(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N F"]:
        """Encode positions already normalised to ``[0, 1]^3`` (values outside are clamped). Each level's
        features are scaled by :attr:`level_weights` when set (coarse-to-fine, :func:`coarse_to_fine_weights`)."""
        if x.device.type != "cpu" or not self._complex_rows or (x.requires_grad and torch.is_grad_enabled()):
            out = self.forward_reference(x)
        else:
            out = self._forward_cpu(x)
        if self.level_weights is None:
            return out
        f = self.cfg.n_features_per_level
        return (out.view(-1, self.cfg.n_levels, f) * self.level_weights.to(out)[:, None]).view(out.shape)

    def set_level_weights(self, weights: Float[Tensor, "L"] | None) -> None:
        """Scale level ``l``'s features by ``weights[l]`` from now on (``None``: all levels at full weight, the
        default, and no extra work). Not part of the state: the caller sets it from its schedule every step."""
        if weights is not None and weights.shape != (self.cfg.n_levels,):
            raise ValueError(
                f"level weights must have shape ({self.cfg.n_levels},), got {tuple(weights.shape)}"
            )
        self.level_weights = None if weights is None else weights.to(self.embeddings.device)

    @property
    def _complex_rows(self) -> bool:
        """Rows of 2 float32/float64 features, read as one complex number; needs power-of-two hashed tables."""
        return self.cfg.n_features_per_level == 2 and self.embeddings.dtype in (torch.float32, torch.float64)

    def forward_reference(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N F"]:
        """The reference implementation (any device, any feature count); see the module docstring."""
        x = x.clamp(0.0, 1.0)
        res = self.res.to(x.dtype)[:, None]  # [L, 1]
        scaled = x[:, None, :] * res  # [N, L, 3]
        base = torch.minimum(scaled.detach().floor(), res - 1)
        frac = scaled - base  # [N, L, 3], differentiable w.r.t. x
        cells = base.long()[..., None] + torch.arange(2, device=x.device)  # [N, L, 3, 2]: lower, upper corner
        d = self.n_dense
        dense = self._corners(cells[:, :d] * self.dense_strides[:, :, None], torch.add)  # [N, Ld, 8]
        hashed = self._corners(cells[:, d:] * self.primes[:, None], torch.bitwise_xor)  # [N, Lh, 8]
        idx = torch.cat([dense, hashed % self.hash_sizes[:, None]], dim=1) + self.level_offsets[:, None]
        w = self._corners(torch.stack([1.0 - frac, frac], dim=-1), torch.mul)  # [N, L, 8] trilinear weights
        feats = _GatherRows.apply(self.embeddings, idx)  # [N, L, 8, F]
        return (w[..., None] * feats).sum(dim=2).flatten(1)

    def _forward_cpu(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N F"]:
        """Level-major, int32 indices, complex rows; the same values as :meth:`forward_reference`.

        Weights and rows are built :data:`CPU_CHUNK` points at a time, so the ~20 elementwise passes over them
        run in cache instead of streaming ``[L, N, 8]`` tensors through memory."""
        n, n_levels, d = x.shape[0], self.cfg.n_levels, self.n_dense
        x = x.clamp(0.0, 1.0)
        w = x.new_empty((n_levels, n, 8))
        idx_dense = torch.empty((d, n, 8), dtype=self.index_dtype)
        idx_hashed = torch.empty((n_levels - d, n, 8), dtype=self.index_dtype)
        for a, b in _chunks(n):
            w[:, a:b], idx_dense[:, a:b], idx_hashed[:, a:b] = self._weights_and_rows(x[a:b])
        out = _InterpComplex.apply(self.embeddings, w, idx_dense, idx_hashed, self.split)  # [L, N, F]
        return out.permute(1, 0, 2).reshape(n, self.output_dim)  # n may be 0 (a chunk with no surface hits)

    def _weights_and_rows(self, x: Float[Tensor, "N 3"]) -> tuple[Tensor, Tensor, Tensor]:
        """Trilinear weights ``[L, N, 8]`` and table rows ``[Ld, N, 8]``, ``[Lh, N, 8]`` of points in [0, 1]^3.

        Built axis-major (``[L, 3, 2, N]``: points innermost, so every broadcast is a vectorised sweep), then
        transposed once to the point-major order that the blend and the backward's accumulation need."""
        res = self.res.to(x.dtype)[:, None, None]  # [L, 1, 1]
        scaled = x.t()[None] * res  # [L, 3, N]
        base = torch.minimum(scaled.floor(), res - 1)
        frac = scaled - base  # [L, 3, N]
        lower = base.long()
        cells = torch.stack([lower, lower + 1], dim=2)  # [L, 3, 2, N]: lower, upper corner
        d = self.n_dense
        # Per-axis parts of each corner's row, with the level's start folded into the x part: dense levels index
        # the whole table (offset added), hashed ones the hashed block (``k * T`` xor-ed in: the hash is < T).
        dense = cells[:d] * self.dense_strides[:, :, None, None]
        dense[:, 0] += self.level_offsets[:d, None, None]
        hashed = (cells[d:] * self.primes[:, None, None]) & (self.table_size - 1)
        hashed[:, 0] ^= self.hashed_starts[:, None, None]
        idx_dense = self._corners_am(dense.to(self.index_dtype), torch.add)  # [Ld, N, 8]
        idx_hashed = self._corners_am(hashed.to(self.index_dtype), torch.bitwise_xor)  # [Lh, N, 8]
        w = self._corners_am(torch.stack([1.0 - frac, frac], dim=2), torch.mul)  # [L, N, 8]
        return w, idx_dense, idx_hashed

    @staticmethod
    def _corners_am(per_axis: Tensor, combine: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """``[L, 3, 2, N]`` -> ``[L, N, 8]``, corners ordered as in :meth:`_corners`."""
        xs = per_axis[:, 0, :, None, None]
        ys = per_axis[:, 1, None, :, None]
        zs = per_axis[:, 2, None, None, :]
        return combine(combine(xs, ys), zs).flatten(1, 3).transpose(1, 2)


def coarse_to_fine_weights(n_levels: int, progress: float) -> Float[Tensor, "L"]:
    """BARF's coarse-to-fine window over hash-grid levels (Lin et al. 2021, eq. 14, with levels for frequency
    bands): at ``progress`` 0 only the coarsest level is on, at 1 all are; level ``l >= 1`` fades in as
    ``(1 - cos(pi * clamp(a - l + 1, 0, 1))) / 2`` with ``a = progress * (n_levels - 1)``. Fine levels switched off
    early keep the field smooth, so the photometric gradient with respect to a camera's pose points the right way
    while the poses are still a few degrees off (a fine grid alone has a basin of a few pixels)."""
    a = min(max(progress, 0.0), 1.0) * (n_levels - 1)
    levels = torch.arange(n_levels, dtype=torch.float64)
    w = (1 - torch.cos(math.pi * (a - levels + 1).clamp(0.0, 1.0))) / 2
    w[0] = 1.0
    return w.to(torch.float32)


def apply_coarse_to_fine(encoding: HashGridEncoding, window: tuple[int, int], step: int) -> None:
    """Set ``encoding``'s level weights for training step ``step`` of a coarse-to-fine ``window`` ``(start, end)``
    in steps (:func:`coarse_to_fine_weights`; all levels on from ``end``). ``end <= start``: no window, nothing set."""
    start, end = window
    if end > start:
        progress = (step - start) / (end - start)
        n = encoding.cfg.n_levels
        encoding.set_level_weights(None if progress >= 1 else coarse_to_fine_weights(n, progress))


CPU_CHUNK = 16384
"""Points per chunk of the CPU path: its per-chunk weights, rows and gathered features are made and used while
they are still in cache. Chunks change no value: the forward is per point, and the backward adds each table row's
contributions in the same order as one pass (chunks in point order, within one level)."""


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(a, min(n, a + CPU_CHUNK)) for a in range(0, n, CPU_CHUNK)]


def _levels(
    rows: Tensor, idx_dense: Tensor, idx_hashed: Tensor, split: int
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(level, table block, level's rows [N, 8])`` for every level: dense ones index ``rows[:split]``, hashed
    ones ``rows[split:]``. Level by level, so one level's block of the table stays in cache while it is read or
    written (a hashed level is 2^19 rows, 4 MB)."""
    for level in range(idx_dense.shape[0]):
        yield level, rows[:split], idx_dense[level]
    for k in range(idx_hashed.shape[0]):
        yield idx_dense.shape[0] + k, rows[split:], idx_hashed[k]


class _InterpComplex(torch.autograd.Function):
    """Gather + trilinear blend in one node; gradient for the table only (positions take the reference path).

    Rows are read as complex numbers (one index per 2-feature row) and blended as real ``[..., 8, 2]`` views: the
    products and the sum over the 8 corners are the reference's, in its order; the backward's ``grad * w`` too.
    Both directions run level by level, :data:`CPU_CHUNK` points at a time."""

    @staticmethod
    def forward(ctx, table: Tensor, w: Tensor, idx_dense: Tensor, idx_hashed: Tensor, split: int) -> Tensor:
        ctx.save_for_backward(w, idx_dense, idx_hashed)
        ctx.rows, ctx.split = table.shape[0], split
        n = w.shape[1]
        out = table.new_empty((w.shape[0], n, 2))
        rows_all = torch.view_as_complex(table)
        gathered = rows_all.new_empty(min(n, CPU_CHUNK) * 8)
        for level, block, idx in _levels(rows_all, idx_dense, idx_hashed, split):
            for a, b in _chunks(n):
                rows = gathered[: (b - a) * 8]
                torch.index_select(block, 0, idx[a:b].reshape(-1), out=rows)
                corners = torch.view_as_real(rows).view(b - a, 8, 2) * w[level, a:b, :, None]
                torch.sum(corners, dim=1, out=out[level, a:b])
        return out  # [L, N, 2]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        w, idx_dense, idx_hashed = ctx.saved_tensors
        n = w.shape[1]
        table_grad = grad.new_zeros(ctx.rows, 2)
        per_corner = grad.new_empty((min(n, CPU_CHUNK), 8, 2))
        for level, block, idx in _levels(torch.view_as_complex(table_grad), idx_dense, idx_hashed, ctx.split):
            for a, b in _chunks(n):  # in point order: each row's additions keep the one-pass order
                g = per_corner[: b - a]
                torch.mul(w[level, a:b], grad[level, a:b, 0, None], out=g[..., 0])
                torch.mul(w[level, a:b], grad[level, a:b, 1, None], out=g[..., 1])
                block.index_add_(0, idx[a:b].reshape(-1), torch.view_as_complex(g).reshape(-1))
        return table_grad, None, None, None, None
