"""``transforms.json`` photo sets: Blender/NeRF-synthetic, nerfstudio and instant-ngp forms.

- **Blender / NeRF-synthetic**: ``transforms_{train,val,test}.json``, each with ``camera_angle_x`` (horizontal
  field of view, radians) and ``frames[].file_path`` (often without extension, ``./train/r_0``) and
  ``transform_matrix`` (camera-to-world, OpenGL camera axes, Blender's Z-up world); RGBA images.
- **nerfstudio / instant-ngp**: one ``transforms.json`` with ``fl_x fl_y cx cy w h`` (pixels), optionally per frame,
  ``camera_model`` (``OPENCV`` with ``k1 k2 p1 p2``; ``PINHOLE``), nerfstudio's optional ``mask_path`` per frame
  and ``train_filenames`` / ``val_filenames`` / ``test_filenames``; instant-ngp's ``aabb_scale``, ``scale`` and
  ``offset`` (its unit cube, used as the object's box for normalisation). Both write a Z-up world (nerfstudio's
  and instant-ngp's COLMAP converters orient "up" to +Z).

Intrinsics given for ``w x h`` are rescaled to the stored image's size (downscaled image folders).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from text3d.data.errors import DataError
from text3d.data.frames import Z_UP, WorldFrame
from text3d.data.photoset import (
    SPLITS,
    PhotoSet,
    RawFrame,
    assemble,
    check_pose,
    find_image,
    find_mask,
    fov_to_focal,
    image_size,
    relative_name,
)
from text3d.io import write_json

_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
_SUPPORTED_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")


def transforms_files(folder: Path) -> dict[str, Path]:
    """``{split: file}``: ``transforms_{split}.json`` files if any, else ``{"": transforms.json}``, else ``{}``."""
    split_files = {s: folder / f"transforms_{s}.json" for s in SPLITS}
    found = {s: p for s, p in split_files.items() if p.is_file()}
    if found:
        return found
    if (folder / "transforms.json").is_file():
        return {"": folder / "transforms.json"}
    return {}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'frames'")
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{path}: no 'frames' list (or it is empty)")
    return data


def _number(d: dict, key: str, where: str) -> float | None:
    if key not in d or d[key] is None:
        return None
    try:
        v = float(d[key])
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: '{key}' must be a number, got {d[key]!r}") from err
    if not math.isfinite(v):
        raise DataError(f"{where}: '{key}' is not finite ({v})")
    return v


def _intrinsics(
    top: dict, fr: dict, img_w: int, img_h: int, where: str
) -> tuple[float, float, float, float, int, int, tuple | None]:
    """Resolve ``fx fy cx cy w h dist`` for one frame (frame keys override the file's)."""
    get = lambda k: _number(fr, k, where) if k in fr else _number(top, k, where)  # noqa: E731
    model = fr.get("camera_model", top.get("camera_model", "OPENCV"))
    if model not in _SUPPORTED_MODELS:
        raise DataError(
            f"{where}: camera_model {model!r} is not supported (supported: {', '.join(_SUPPORTED_MODELS)})"
        )
    w, h = get("w"), get("h")
    w = int(round(w)) if w else img_w
    h = int(round(h)) if h else img_h
    fl_x, fl_y = get("fl_x"), get("fl_y")
    ang_x, ang_y = get("camera_angle_x"), get("camera_angle_y")
    if fl_x is None and ang_x is not None:
        fl_x = fov_to_focal(ang_x, w)
    if fl_y is None and ang_y is not None:
        fl_y = fov_to_focal(ang_y, h)
    if fl_x is None and fl_y is None:
        raise DataError(
            f"{where}: no focal length; give camera_angle_x, or fl_x/fl_y (per frame or at the top)"
        )
    fl_x = fl_y if fl_x is None else fl_x
    fl_y = fl_x if fl_y is None else fl_y
    if fl_x <= 0 or fl_y <= 0:
        raise DataError(f"{where}: focal length must be positive, got fl_x={fl_x}, fl_y={fl_y}")
    cx, cy = get("cx"), get("cy")
    cx = w / 2 if cx is None else cx
    cy = h / 2 if cy is None else cy
    k = [get(x) or 0.0 for x in ("k1", "k2", "p1", "p2")]
    for extra in ("k3", "k4"):
        if get(extra):
            raise DataError(f"{where}: distortion {extra} is not supported (OPENCV k1 k2 p1 p2 only)")
    dist = tuple(k) if any(k) else None
    return fl_x, fl_y, cx, cy, w, h, dist


def _ngp_box(data: dict) -> tuple[list[float], list[float]] | None:
    """instant-ngp's unit cube in the input's world: ``ngp = (p.y, p.z, p.x) * scale + offset`` covers [0, 1]^3
    (its ``nerf_matrix_to_ngp`` cycles the axes), so the cube is ``p = (ngp - offset) / scale``, axes cycled back."""
    if "scale" not in data and "offset" not in data:
        return None
    s = float(data.get("scale", 0.33))
    off = [float(x) for x in data.get("offset", (0.5, 0.5, 0.5))]
    off_xyz = np.array([off[2], off[0], off[1]])
    lo, hi = (0.0 - off_xyz) / s, (1.0 - off_xyz) / s
    return lo.tolist(), hi.tolist()


def load_transforms(
    path: str | os.PathLike,
    *,
    frame: WorldFrame = Z_UP,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    splits: tuple[str, ...] = SPLITS,
) -> PhotoSet:
    """Load a ``transforms.json`` photo set (a folder, or one of its json files).

    Args:
        path: the folder holding ``transforms.json`` or ``transforms_{train,val,test}.json``, or one such file
            (a single split file loads only that split).
        frame: the input's world frame (all known writers use Z up).
        dtype, device: of the image tensors.
        splits: which splits to load.

    Raises:
        DataError: one line naming the file and frame at fault.
    """
    p = Path(path)
    if p.is_file():
        folder = p.parent
        stem = p.stem
        split = stem[len("transforms_") :] if stem.startswith("transforms_") else ""
        files = {split if split in SPLITS else "": p}
    else:
        folder = p
        files = transforms_files(p)
        if not files:
            raise DataError(f"{p}: no transforms.json or transforms_train.json")
    raw: list[RawFrame] = []
    meta: dict = {}
    fmt = "blender"
    for split_name, file in files.items():
        if split_name and split_name not in splits:
            continue
        data = _read_json(file)
        if any(k in data for k in ("fl_x", "fl_y")) or any(
            "fl_x" in f for f in data["frames"] if isinstance(f, dict)
        ):
            fmt = "nerfstudio"
        if any(k in data for k in ("aabb_scale", "scale", "offset")):
            fmt = "instant-ngp"
            for k in ("aabb_scale", "scale", "offset"):
                if k in data:
                    meta[k] = data[k]
            box = _ngp_box(data)
            if box is not None:
                meta["object_box"] = box
        if "applied_transform" in data:
            meta["applied_transform"] = data["applied_transform"]
        named_splits = {}
        for s in SPLITS:
            names = data.get(f"{s}_filenames")
            if isinstance(names, list):
                named_splits.update({Path(n).as_posix(): s for n in names})
        masks_dir = folder / "masks"
        for i, fr in enumerate(data["frames"]):
            where = f"{file.name}: frame {i}"
            if not isinstance(fr, dict):
                raise DataError(f"{where}: expected an object with file_path and transform_matrix")
            if "file_path" not in fr:
                raise DataError(f"{where}: no 'file_path'")
            if "transform_matrix" not in fr:
                raise DataError(f"{where} ({fr['file_path']}): no 'transform_matrix'")
            where = f"{file.name}: frame {i} ({fr['file_path']})"
            try:
                m = np.asarray(fr["transform_matrix"], np.float64)
            except (TypeError, ValueError) as err:
                raise DataError(f"{where}: transform_matrix is not a numeric matrix") from err
            c2w = check_pose(m, where)
            img_path = find_image(folder, str(fr["file_path"]))
            if img_path is None:
                raise DataError(f"{where}: image not found (also tried .png, .jpg, ... appended)")
            name = relative_name(img_path, folder)
            s = (
                split_name
                or named_splits.get(name)
                or named_splits.get(Path(str(fr["file_path"])).as_posix())
                or "train"
            )
            if s not in splits:
                continue
            img_w, img_h = image_size(img_path)
            fx, fy, cx, cy, w, h, dist = _intrinsics(data, fr, img_w, img_h, where)
            mask_path = None
            if "mask_path" in fr:
                mask_path = find_image(folder, str(fr["mask_path"]))
                if mask_path is None:
                    raise DataError(f"{where}: mask {fr['mask_path']} not found")
            else:
                mask_path = find_mask(masks_dir, name) or find_mask(masks_dir, Path(name).name)
            raw.append(
                RawFrame(
                    name=name,
                    path=img_path,
                    c2w=c2w,
                    fx=fx,
                    fy=fy,
                    cx=cx,
                    cy=cy,
                    width=w,
                    height=h,
                    distortion=dist,
                    split=s,
                    mask_path=mask_path,
                    per_frame_intrinsics=any(k in fr for k in _INTRINSIC_KEYS),
                )
            )
    return assemble(raw, frame=frame, format=fmt, source=str(p), meta=meta, dtype=dtype, device=device)


def write_transforms(path: str | os.PathLike, photos: PhotoSet, *, placement: str = "input") -> Path:
    """Write ``photos``' cameras as a nerfstudio-style ``transforms.json`` (atomically): per-frame ``fl_x fl_y cx
    cy w h`` (+ OPENCV ``k1 k2 p1 p2``) and camera-to-world matrices in the input's world (``placement="input"``,
    undoing normalisation and the frame change) or text3d's normalised frame. For corrected poses after a fit."""
    if placement not in ("input", "normalized"):
        raise ValueError(f"placement must be 'input' or 'normalized', got {placement!r}")
    c2w_all = photos.c2w.detach().double().cpu()
    if placement == "input":
        c2w_all = photos.normalization.invert_c2w(c2w_all)
        c2w_all = torch.from_numpy(np.linalg.inv(photos.frame.to_world_matrix)) @ c2w_all
    intr = photos.intrinsics
    frames = []
    for i in range(len(photos)):
        c2w = c2w_all[i]
        fr = {
            "file_path": photos.names[i],
            "transform_matrix": c2w.tolist(),
            "fl_x": float(intr.fx[i]),
            "fl_y": float(intr.fy[i]),
            "cx": float(intr.cx[i]),
            "cy": float(intr.cy[i]),
            "w": intr.width,
            "h": intr.height,
        }
        if intr.distortion is not None:
            fr.update(
                dict(zip(("k1", "k2", "p1", "p2"), (float(x) for x in intr.distortion[i]), strict=True))
            )
            fr["camera_model"] = "OPENCV"
        frames.append(fr)
    out = {"camera_model": "OPENCV" if intr.distortion is not None else "PINHOLE", "frames": frames}
    for s in ("train", "val", "test"):
        names = [n for n, sp in zip(photos.names, photos.splits, strict=True) if sp == s]
        if names:
            out[f"{s}_filenames"] = names
    return write_json(path, out)
