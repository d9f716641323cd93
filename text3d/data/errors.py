"""The photo-set error: one line naming the file (and frame) at fault and what to do about it."""

from __future__ import annotations

from text3d.errors import Text3DError


class DataError(Text3DError):
    """A photo set is missing, malformed or unusable (bad transforms.json, unreadable or missing images, too few
    images, mixed sizes without per-frame intrinsics, an unsupported camera model...)."""
