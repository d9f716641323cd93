"""One entry point for photo sets: detect the format from what the folder holds, load, normalise."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from text3d.data.colmap import find_model_dir, load_colmap
from text3d.data.errors import DataError
from text3d.data.photoset import IMAGE_EXTENSIONS, PhotoSet
from text3d.data.transforms import load_transforms, transforms_files


def detect_format(path: str | os.PathLike) -> str:
    """``"transforms"``, ``"colmap"`` or ``"images"`` (plain photos, no poses) for a folder or transforms file.

    Raises:
        DataError: the path is missing, or a folder with no poses and no images.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "transforms"
        raise DataError(f"{p}: expected a folder (or a transforms.json file)")
    if transforms_files(p):
        return "transforms"
    if find_model_dir(p) is not None:
        return "colmap"
    img_dir = p / "images" if (p / "images").is_dir() else p
    if any(f.suffix.lower() in IMAGE_EXTENSIONS for f in img_dir.iterdir() if f.is_file()):
        return "images"
    raise DataError(f"{p}: no images, no transforms.json and no COLMAP model")


def load_photo_set(
    path: str | os.PathLike,
    *,
    normalize: bool = True,
    bound: float = 1.0,
    margin: float = 0.1,
    normalize_method: str = "auto",
    holdout: int = 0,
    sfm_dir: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> PhotoSet:
    """Load any supported photo set and (by default) normalise it into ``[-bound, bound]^3``.

    Args:
        path: a folder with ``transforms.json`` / ``transforms_{split}.json``, or a COLMAP layout
            (``sparse/0`` + ``images/``), or a transforms json file.
        normalize, bound, margin, normalize_method: see :meth:`PhotoSet.normalized`.
        holdout: if > 1 and the set has no test split, hold out every ``holdout``-th image as ``"test"``.
        sfm_dir: for plain photos (no poses), where structure-from-motion keeps its database and model
            (default: a temporary folder). The SfM report is in ``photos.meta["sfm"]``.
        dtype, device: of the image tensors.

    Raises:
        DataError: one line saying what is wrong with the input (including SfM registering too few images).
    """
    kind = detect_format(path)
    if kind == "transforms":
        photos = load_transforms(path, dtype=dtype, device=device)
    elif kind == "colmap":
        photos = load_colmap(path, dtype=dtype, device=device)
    else:
        from text3d.data.sfm import load_unposed

        photos = load_unposed(path, work_dir=sfm_dir, dtype=dtype, device=device)
    if holdout and holdout > 1 and photos.counts()["test"] == 0:
        photos = photos.with_holdout(holdout)
    if normalize:
        photos = photos.normalized(bound=bound, margin=margin, method=normalize_method)
    return photos
