"""Section timing for benchmarks: ``with timer("unet"): ...`` adds the section's wall time in ms.

Synchronises the device at each section boundary so GPU work is charged to the section that launched it. The
training loop passes no timer (``None``), so it never synchronises.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch


class SectionTimer:
    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.ms: dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            with torch.profiler.record_function(f"text3d.{name}"):  # a named range in profiler traces
                yield
        finally:
            self._sync()
            self.ms[name] += (time.perf_counter() - t0) * 1000.0

    def reset(self) -> None:
        self.ms.clear()


def section(timer: SectionTimer | None, name: str):
    """``timer(name)`` or a no-op context when there is no timer."""
    return timer(name) if timer is not None else contextlib.nullcontext()
