"""COLMAP sparse models (``cameras``, ``images``, ``points3D``; ``.bin`` or ``.txt``) beside an ``images/`` folder.

The readers follow COLMAP's documented format (little endian; ids are unordered and need not be contiguous):

- cameras: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]``; binary ``<iiQQ`` then ``double`` params, the count set
  by the model.
- images: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` (+ a line of 2D points); binary ``<idddddddi``, a
  NUL-terminated name, a ``uint64`` point count and ``<ddq`` per point. The pose is **world-to-camera** in OpenCV
  axes (x right, y down, looking down +z): ``X_cam = R(q) X_world + t``.
- points3D: ``POINT3D_ID X Y Z R G B ERROR TRACK[]``; binary ``<QdddBBBd``, a ``uint64`` track length and
  ``<ii`` per track element.

Camera-to-world in text3d's OpenGL camera axes is ``[R^T | -R^T t] @ diag(1, -1, -1, 1)`` (flip the camera's Y and
Z). The world of a reconstruction is arbitrary; :func:`load_colmap` by default turns the cameras' mean up
direction to +Y for training (``orient="up"``) while exports keep COLMAP's coordinates.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from text3d.data.errors import DataError
from text3d.data.frames import WorldFrame, up_aligned_frame
from text3d.data.photoset import PhotoSet, RawFrame, assemble, find_mask

# model id -> (name, number of params)
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
_MODEL_IDS = {name: (mid, n) for mid, (name, n) in CAMERA_MODELS.items()}


@dataclass
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass
class ColmapImage:
    id: int
    qvec: tuple[float, float, float, float]
    """World-to-camera rotation, Hamilton quaternion ``(w, x, y, z)``."""
    tvec: tuple[float, float, float]
    camera_id: int
    name: str


@dataclass
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: np.ndarray
    """``float64 [P, 3]``"""
    colors: np.ndarray
    """``uint8 [P, 3]``"""


def qvec_to_rotmat(q) -> np.ndarray:
    """``float64 [3, 3]`` from a unit quaternion ``(w, x, y, z)`` (normalised first)."""
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def image_c2w_opengl(img: ColmapImage) -> np.ndarray:
    """``float64 [4, 4]`` camera-to-world in OpenGL camera axes from COLMAP's world-to-camera pose."""
    r = qvec_to_rotmat(img.qvec)
    c2w = np.eye(4)
    c2w[:3, :3] = r.T
    c2w[:3, 3] = -r.T @ np.asarray(img.tvec, np.float64)
    return c2w @ np.diag([1.0, -1.0, -1.0, 1.0])


# ----------------------------------------------------------------------------------------------------- readers
class _Reader:
    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise DataError(f"{self.path}: truncated (needed {size} more bytes at offset {self.pos})")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise DataError(f"{self.path}: truncated")
        self.pos += n

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DataError(f"{self.path}: truncated image name")
        s = self.data[self.pos : end].decode("utf-8", "replace")
        self.pos = end + 1
        return s


def read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    (n,) = r.read("<Q")
    cams = {}
    for _ in range(n):
        cid, mid, w, h = r.read("<iiQQ")
        if mid not in CAMERA_MODELS:
            raise DataError(f"{path}: camera {cid} has unknown model id {mid}")
        name, k = CAMERA_MODELS[mid]
        cams[cid] = ColmapCamera(cid, name, int(w), int(h), r.read(f"<{k}d"))
    return cams


def read_images_bin(path: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    (n,) = r.read("<Q")
    imgs = {}
    for _ in range(n):
        iid, qw, qx, qy, qz, tx, ty, tz, cid = r.read("<idddddddi")
        name = r.cstring()
        (n2d,) = r.read("<Q")
        r.skip(24 * n2d)
        imgs[iid] = ColmapImage(iid, (qw, qx, qy, qz), (tx, ty, tz), cid, name)
    return imgs


def read_points_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    r = _Reader(path)
    (n,) = r.read("<Q")
    xyz = np.empty((n, 3), np.float64)
    rgb = np.empty((n, 3), np.uint8)
    for i in range(n):
        _, x, y, z, cr, cg, cb, _err = r.read("<QdddBBBd")
        (track,) = r.read("<Q")
        r.skip(8 * track)
        xyz[i] = (x, y, z)
        rgb[i] = (cr, cg, cb)
    return xyz, rgb


def _data_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    return [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]


def read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for ln in _data_lines(path):
        tok = ln.split()
        if not tok:
            continue
        try:
            cid, model, w, h = int(tok[0]), tok[1], int(tok[2]), int(tok[3])
            params = tuple(float(x) for x in tok[4:])
        except (IndexError, ValueError) as err:
            raise DataError(f"{path}: bad camera line {ln.strip()!r}") from err
        if model not in _MODEL_IDS or len(params) != _MODEL_IDS[model][1]:
            raise DataError(f"{path}: camera {cid}: model {model} with {len(params)} params is not valid")
        cams[cid] = ColmapCamera(cid, model, w, h, params)
    return cams


def read_images_txt(path: Path) -> dict[int, ColmapImage]:
    lines = _data_lines(path)
    imgs, i = {}, 0
    while i < len(lines):
        tok = lines[i].split()
        if not tok:
            i += 1
            continue
        try:
            iid = int(tok[0])
            q = tuple(float(x) for x in tok[1:5])
            t = tuple(float(x) for x in tok[5:8])
            cid = int(tok[8])
            name = " ".join(tok[9:])
        except (IndexError, ValueError) as err:
            raise DataError(f"{path}: bad image line {lines[i].strip()!r}") from err
        if not name:
            raise DataError(f"{path}: image {iid} has no name")
        imgs[iid] = ColmapImage(iid, q, t, cid, name)
        i += 2  # the next line lists the 2D points (possibly empty)
    return imgs


def read_points_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    for ln in _data_lines(path):
        tok = ln.split()
        if not tok:
            continue
        try:
            xyz.append([float(x) for x in tok[1:4]])
            rgb.append([int(x) for x in tok[4:7]])
        except (IndexError, ValueError) as err:
            raise DataError(f"{path}: bad point line {ln.strip()[:60]!r}") from err
    return np.asarray(xyz, np.float64).reshape(-1, 3), np.asarray(rgb, np.uint8).reshape(-1, 3)


def read_model(model_dir: str | os.PathLike) -> ColmapModel:
    """Read a sparse model folder, binary if ``cameras.bin`` is there (as COLMAP prefers), else text."""
    d = Path(model_dir)
    if (d / "cameras.bin").is_file():
        ext, readers = ".bin", (read_cameras_bin, read_images_bin, read_points_bin)
    elif (d / "cameras.txt").is_file():
        ext, readers = ".txt", (read_cameras_txt, read_images_txt, read_points_txt)
    else:
        raise DataError(f"{d}: no cameras.bin or cameras.txt (not a COLMAP sparse model)")
    if not (d / f"images{ext}").is_file():
        raise DataError(f"{d}: has cameras{ext} but no images{ext}")
    cams = readers[0](d / f"cameras{ext}")
    imgs = readers[1](d / f"images{ext}")
    pts_path = d / f"points3D{ext}"
    pts, cols = readers[2](pts_path) if pts_path.is_file() else (np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    return ColmapModel(cams, imgs, pts, cols)


# ------------------------------------------------------------------------------------------------------ loader
def find_model_dir(folder: Path) -> Path | None:
    """Where the sparse model is: ``sparse/0``, ``sparse``, ``colmap/sparse/0`` (nerfstudio) or the folder."""
    for cand in (folder / "sparse" / "0", folder / "sparse", folder / "colmap" / "sparse" / "0", folder):
        if (cand / "cameras.bin").is_file() or (cand / "cameras.txt").is_file():
            return cand
    return None


def _intrinsics(cam: ColmapCamera, where: str) -> tuple[float, float, float, float, tuple | None]:
    p = cam.params
    if cam.model == "SIMPLE_PINHOLE":
        return p[0], p[0], p[1], p[2], None
    if cam.model == "PINHOLE":
        return p[0], p[1], p[2], p[3], None
    if cam.model == "SIMPLE_RADIAL":
        return p[0], p[0], p[1], p[2], (p[3], 0.0, 0.0, 0.0)
    if cam.model == "RADIAL":
        return p[0], p[0], p[1], p[2], (p[3], p[4], 0.0, 0.0)
    if cam.model == "OPENCV":
        return p[0], p[1], p[2], p[3], tuple(p[4:8])
    raise DataError(
        f"{where}: camera model {cam.model} is not supported (SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, "
        "OPENCV); undistort the images with colmap image_undistorter"
    )


def load_colmap(
    path: str | os.PathLike,
    *,
    images_dir: str | os.PathLike | None = None,
    orient: str = "up",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> PhotoSet:
    """Load a COLMAP reconstruction and its images as a :class:`PhotoSet` (every image ``"train"``).

    Args:
        path: a folder with ``sparse/0`` (or ``sparse``, ``colmap/sparse/0``) and ``images/``, or the model folder.
        images_dir: where the images are (default ``<path>/images``).
        orient: ``"up"`` turns the cameras' mean up direction to +Y for training (exports keep COLMAP's
            coordinates); ``"none"`` keeps COLMAP's world as text3d's.
        dtype, device: of the image tensors.
    """
    folder = Path(path)
    model_dir = find_model_dir(folder)
    if model_dir is None:
        raise DataError(f"{folder}: no COLMAP model (looked for sparse/0, sparse, colmap/sparse/0)")
    model = read_model(model_dir)
    if images_dir is None:
        root = folder if (folder / "images").is_dir() else model_dir.parent.parent
        images_dir = root / "images"
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"{folder}: no images/ folder beside the COLMAP model")
    masks_dir = images_dir.parent / "masks"
    raw = []
    for img in sorted(model.images.values(), key=lambda im: im.name):
        where = f"{model_dir.name}/images: image {img.id} ({img.name})"
        cam = model.cameras.get(img.camera_id)
        if cam is None:
            raise DataError(f"{where}: camera {img.camera_id} is not in the cameras file")
        q = np.asarray(img.qvec)
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(img.tvec)) and np.linalg.norm(q) > 1e-8):
            raise DataError(f"{where}: pose has NaN values or a zero quaternion")
        fx, fy, cx, cy, dist = _intrinsics(cam, where)
        p = images_dir / img.name
        if not p.is_file():
            raise DataError(f"{where}: image file {p} not found")
        raw.append(
            RawFrame(
                name=img.name,
                path=p,
                c2w=image_c2w_opengl(img),
                fx=fx,
                fy=fy,
                cx=cx,
                cy=cy,
                width=cam.width,
                height=cam.height,
                distortion=dist,
                mask_path=find_mask(masks_dir, img.name),
                per_frame_intrinsics=True,
            )
        )
    if not raw:
        raise DataError(f"{model_dir}: the model has no registered images")
    if orient == "up":
        frame = up_aligned_frame("colmap", np.stack([f.c2w for f in raw]))
    elif orient == "none":
        frame = WorldFrame.make("colmap", np.eye(4))
    else:
        raise ValueError(f"orient must be 'up' or 'none', got {orient!r}")
    cols = model.colors.astype(np.float32) / 255.0
    return assemble(
        raw,
        frame=frame,
        format="colmap",
        source=str(folder),
        points=model.points,
        point_colors=cols,
        meta={"model_dir": str(model_dir), "cameras": len(model.cameras)},
        dtype=dtype,
        device=device,
    )
