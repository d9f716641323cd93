"""Moving host-drawn values to the compute device without stalling it.

Training draws its random cameras and lights from the CPU generator (the same numbers on any device, and one RNG
state to checkpoint). A plain ``.to("cuda")`` of a pageable CPU tensor waits for the device to finish its queued
work, one stall per copy per step; a copy from pinned memory with ``non_blocking=True`` is queued behind that work
instead. The pinned buffer comes from torch's caching host allocator, which keeps it alive until the copy is done.
"""

from __future__ import annotations

import torch
from torch import Tensor


def upload(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``; CPU tensors go to a CUDA device asynchronously through pinned memory."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def query_chunk(device: torch.device | str) -> int:
    """Points per batched field query when nothing needs gradients (export bake, isosurface, threshold search).

    On CPU a hash-grid query builds ``[N, 16 levels, 8 corners]`` index and weight tensors; at 2^14 points they stay
    in cache, and 700k albedo queries ran 2.4x faster than at 2^18 on the 2-core CPU (4.5 s vs 10.8 s, one thread).
    GPUs want large launches instead.
    """
    return 1 << 14 if torch.device(device).type == "cpu" else 1 << 20
