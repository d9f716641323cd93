"""A posed photo set in one typed structure, whatever format it came from.

Conventions (the same for every loader):

- **Pixels.** ``images [N, H, W, 3]`` in [0, 1], as stored in the files: **sRGB-encoded** (display values), not
  linearised, since NeRF-synthetic PNGs are sRGB and fits and PSNR compare in that space. Row 0 is the top.
  ``masks [N, H, W, 1]`` in [0, 1] (the alpha of RGBA images, or a ``masks/`` folder), else ``None``. RGB is
  *straight* (not premultiplied); :meth:`PhotoSet.composite` puts it over a background.
- **Cameras.** ``c2w [N, 4, 4]`` camera-to-world, OpenGL camera axes (looks down -Z, +Y up, +X right), in text3d's
  world (+Y up) -- after the input frame's ``to_world`` and after :attr:`PhotoSet.normalization`.
- **Intrinsics.** Per image ``fx, fy, cx, cy`` in pixels of the stored images, with the continuous pixel
  convention: the image spans ``[0, W] x [0, H]`` and pixel ``(row i, col j)``'s centre is ``(j + 0.5, i + 0.5)``
  (COLMAP's and NeRF-synthetic's ``cx = W / 2``). Optional OpenCV ``k1 k2 p1 p2`` distortion.
- **Splits.** One label per image: ``"train"``, ``"val"`` or ``"test"``.
- **Frames.** :attr:`PhotoSet.frame` records the input's world and the maps back to it
  (:mod:`text3d.data.frames`); :meth:`PhotoSet.placement_matrix` gives the exact 4x4 from the field's frame to an
  exported file's coordinates.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from text3d.data.errors import DataError
from text3d.data.frames import Y_UP, WorldFrame
from text3d.data.normalize import SceneNormalization, compute_normalization

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MIN_IMAGES = 3


# --------------------------------------------------------------------------------------------------- intrinsics
@dataclass
class Intrinsics:
    """Per-image pinhole intrinsics (+ optional OpenCV distortion) for images of one size.

    Attributes:
        fx, fy, cx, cy: ``[N]`` focal lengths and principal point, pixels (continuous convention: see the module).
        width, height: the stored images' size.
        distortion: ``[N, 4]`` OpenCV ``k1 k2 p1 p2`` or ``None`` (no distortion anywhere).
    """

    fx: Float[Tensor, "N"]
    fy: Float[Tensor, "N"]
    cx: Float[Tensor, "N"]
    cy: Float[Tensor, "N"]
    width: int
    height: int
    distortion: Float[Tensor, "N 4"] | None = None

    def __len__(self) -> int:
        return self.fx.shape[0]

    def __getitem__(self, idx) -> Intrinsics:
        idx = _as_index(idx, self.fx.device)
        d = None if self.distortion is None else self.distortion[idx]
        return Intrinsics(self.fx[idx], self.fy[idx], self.cx[idx], self.cy[idx], self.width, self.height, d)

    def to(self, device: torch.device | str) -> Intrinsics:
        d = None if self.distortion is None else self.distortion.to(device)
        return Intrinsics(
            *(t.to(device) for t in (self.fx, self.fy, self.cx, self.cy)), self.width, self.height, d
        )

    @property
    def fovy(self) -> Float[Tensor, "N"]:
        """Vertical field of view, radians (of the undistorted pinhole, for a centred principal point)."""
        return 2 * torch.atan(self.height / (2 * self.fy))

    @property
    def fovx(self) -> Float[Tensor, "N"]:
        return 2 * torch.atan(self.width / (2 * self.fx))

    def min_half_fov(self) -> Float[Tensor, "N"]:
        """The smaller half-angle from the optical axis to an image edge, radians (for normalisation)."""
        w, h = self.width, self.height
        ang = [
            torch.atan(self.cx / self.fx),
            torch.atan((w - self.cx) / self.fx),
            torch.atan(self.cy / self.fy),
            torch.atan((h - self.cy) / self.fy),
        ]
        return torch.stack(ang, -1).min(-1).values

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The intrinsics of the same cameras for images resized to ``width x height`` (distortion unchanged: it
        acts on normalised coordinates)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height, self.distortion
        )

    def is_centred_pinhole(self, tol_px: float = 1e-3) -> bool:
        """Square pixels, principal point at the centre, no distortion: what :class:`text3d.cameras.Cameras`
        (one ``fovy`` per camera) can represent exactly."""
        if self.distortion is not None and bool(self.distortion.abs().max() > 0):
            return False
        return bool(
            ((self.fx - self.fy).abs().max() <= tol_px)
            and ((self.cx - self.width / 2).abs().max() <= tol_px)
            and ((self.cy - self.height / 2).abs().max() <= tol_px)
        )

    def projection(self, near: float = 0.01, far: float = 100.0) -> Float[Tensor, "N 4 4"]:
        """OpenGL projection matrices (camera -> clip, clip y up) for these intrinsics, off-centre included.

        ``x_ndc = 2 u / W - 1`` and ``y_ndc = 1 - 2 v / H`` for pixel coordinates ``(u, v)``; equals
        :func:`text3d.cameras.perspective` (with ``aspect = W / H``) for a centred pinhole.
        """
        n = len(self)
        p = torch.zeros(n, 4, 4, dtype=self.fx.dtype, device=self.fx.device)
        p[:, 0, 0] = 2 * self.fx / self.width
        p[:, 0, 2] = 1 - 2 * self.cx / self.width
        p[:, 1, 1] = 2 * self.fy / self.height
        p[:, 1, 2] = 2 * self.cy / self.height - 1
        p[:, 2, 2] = (far + near) / (near - far)
        p[:, 2, 3] = 2 * far * near / (near - far)
        p[:, 3, 2] = -1.0
        return p

    def camera_directions(
        self, index: Int[Tensor, "R"], u: Float[Tensor, "R"], v: Float[Tensor, "R"], iterations: int = 20
    ) -> Float[Tensor, "R 3"]:
        """Camera-space ray directions (OpenGL axes, ``z = -1``, not unit) through pixel coordinates ``(u, v)``.

        Distortion is inverted by fixed-point iteration of the OpenCV model (as COLMAP and nerfstudio do),
        accurate to ~1e-6 for the distortions real lenses have.
        """
        x = (u - self.cx[index]) / self.fx[index]
        y = (v - self.cy[index]) / self.fy[index]  # OpenCV: y down
        if self.distortion is not None:
            k1, k2, p1, p2 = self.distortion[index].unbind(-1)
            xd, yd = x, y
            for _ in range(iterations):
                r2 = x * x + y * y
                radial = 1 + k1 * r2 + k2 * r2 * r2
                dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
                dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
                x = (xd - dx) / radial
                y = (yd - dy) / radial
        return torch.stack([x, -y, -torch.ones_like(x)], -1)


def _as_index(idx, device) -> Tensor | slice:
    if isinstance(idx, slice):
        return idx
    if isinstance(idx, int):
        return slice(idx, idx + 1) if idx != -1 else slice(-1, None)
    return torch.as_tensor(idx, dtype=torch.long, device=device)


# --------------------------------------------------------------------------------------------------- photo set
@dataclass
class PhotoSet:
    """Posed photos: pixels, masks, cameras, intrinsics, names and splits (conventions: module docstring).

    Attributes:
        images: ``[N, H, W, 3]`` sRGB values in [0, 1].
        c2w: ``[N, 4, 4]`` camera-to-world, OpenGL camera axes, text3d's (possibly normalised) world.
        intrinsics: per-image :class:`Intrinsics`.
        names: image file names relative to the data folder.
        splits: ``"train" | "val" | "test"`` per image.
        masks: ``[N, H, W, 1]`` in [0, 1], or ``None``.
        points, point_colors: ``[P, 3]`` sparse points (same frame as ``c2w``) and their sRGB colours, or ``None``.
        frame: the input's world frame and the maps back to it.
        normalization: world -> current frame (identity until :meth:`normalized`).
        format: ``"blender"``, ``"nerfstudio"``, ``"instant-ngp"`` or ``"colmap"``.
        source: the path it was loaded from.
        meta: plain data from the input worth keeping (instant-ngp ``aabb_scale``/``scale``/``offset``, ...).
    """

    images: Float[Tensor, "N H W 3"]
    c2w: Float[Tensor, "N 4 4"]
    intrinsics: Intrinsics
    names: list[str]
    splits: list[str]
    masks: Float[Tensor, "N H W 1"] | None = None
    points: Float[Tensor, "P 3"] | None = None
    point_colors: Float[Tensor, "P 3"] | None = None
    frame: WorldFrame = Y_UP
    normalization: SceneNormalization = field(default_factory=SceneNormalization)
    format: str = ""
    source: str = ""
    color_space: str = "srgb"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    @property
    def device(self) -> torch.device:
        return self.images.device

    # --- selection
    def indices(self, split: str) -> Int[Tensor, "K"]:
        return torch.tensor([i for i, s in enumerate(self.splits) if s == split], dtype=torch.long)

    def subset(self, index) -> PhotoSet:
        """The images at ``index`` (a list, a tensor or a slice); everything else is shared."""
        if isinstance(index, slice):
            keep = list(range(len(self)))[index]
        else:
            keep = [int(i) for i in torch.as_tensor(index).reshape(-1).tolist()]
        idx = torch.tensor(keep, dtype=torch.long)
        return dataclasses.replace(
            self,
            images=self.images[idx.to(self.images.device)],
            c2w=self.c2w[idx.to(self.c2w.device)],
            intrinsics=self.intrinsics[idx.to(self.intrinsics.fx.device)],
            names=[self.names[i] for i in keep],
            splits=[self.splits[i] for i in keep],
            masks=None if self.masks is None else self.masks[idx.to(self.masks.device)],
        )

    def split(self, name: str) -> PhotoSet:
        return self.subset(self.indices(name))

    def with_holdout(self, every: int) -> PhotoSet:
        """Every ``every``-th image (0, every, 2 every, ...) becomes ``"test"``, the rest ``"train"``: for inputs
        with no test split (COLMAP, one transforms.json), as mip-NeRF 360 and nerfstudio's eval do (1 in 8)."""
        if every < 2:
            raise DataError(f"holdout must be >= 2 (every N-th image held out), got {every}")
        splits = ["test" if i % every == 0 else "train" for i in range(len(self))]
        if splits.count("train") < MIN_IMAGES:
            raise DataError(
                f"holdout {every} leaves {splits.count('train')} training images; {MIN_IMAGES} needed"
            )
        return dataclasses.replace(self, splits=splits)

    def counts(self) -> dict[str, int]:
        c = Counter(self.splits)
        return {s: c.get(s, 0) for s in SPLITS}

    # --- frames
    def normalized(self, bound: float = 1.0, margin: float = 0.1, method: str = "auto") -> PhotoSet:
        """The same set with cameras (and points) moved into ``[-bound, bound]^3`` by a similarity fitted to the
        training cameras (and points, or the input's declared box); see :mod:`text3d.data.normalize`."""
        if self.normalization.source != "identity":
            raise ValueError("this photo set is normalised already")
        train = self.indices("train")
        if len(train) == 0:
            train = torch.arange(len(self))
        box = self.meta.get("object_box")
        norm = compute_normalization(
            self.c2w[train],
            self.intrinsics[train].min_half_fov(),
            self.points,
            box=None if box is None else (np.asarray(box[0]), np.asarray(box[1])),
            bound=bound,
            margin=margin,
            method=method,
        )
        return dataclasses.replace(
            self,
            c2w=norm.apply_c2w(self.c2w),
            points=None if self.points is None else norm.apply_points(self.points),
            normalization=norm,
        )

    def placement_matrix(self, placement: str = "input") -> np.ndarray:
        """``float64 [4, 4]`` from the current (field) frame to an exported file's coordinates.

        ``"input"``: back into the input's world and units (for a Z-up input, glTF's Y-up view of it, which
        Blender's glTF importer turns back exactly); ``"normalized"``: the identity (text3d's centred asset).
        """
        if placement == "normalized":
            return np.eye(4)
        if placement != "input":
            raise ValueError(f"placement must be 'input' or 'normalized', got {placement!r}")
        return self.frame.world_to_file() @ self.normalization.inverse_matrix()

    def describe(self) -> dict:
        """Plain data for run.json: where it came from, counts, size, frame and normalisation."""
        return {
            "format": self.format,
            "source": self.source,
            "images": self.counts(),
            "resolution": [self.width, self.height],
            "masks": self.masks is not None,
            "points": 0 if self.points is None else int(self.points.shape[0]),
            "color_space": self.color_space,
            "frame": self.frame.to_dict(),
            "normalization": self.normalization.to_dict(),
            "meta": self.meta,
        }

    # --- pixels and rays
    def composite(self, background: Float[Tensor, "3"] | float = 1.0) -> Float[Tensor, "N H W 3"]:
        """Images over ``background`` using the masks (NeRF-synthetic is usually fitted over white)."""
        if self.masks is None:
            return self.images
        bg = torch.as_tensor(background, dtype=self.images.dtype, device=self.images.device)
        return self.images * self.masks + bg * (1 - self.masks)

    def rays(
        self, index: Int[Tensor, "R"], u: Float[Tensor, "R"], v: Float[Tensor, "R"]
    ) -> tuple[Float[Tensor, "R 3"], Float[Tensor, "R 3"]]:
        """World-space ray origins and unit directions for pixel coordinates ``(u, v)`` of images ``index``.

        Pixel ``(row i, col j)``'s centre is ``u = j + 0.5, v = i + 0.5``; add jitter in [-0.5, 0.5) for
        anti-aliased training. Handles off-centre principal points and distortion.
        """
        dirs_cam = self.intrinsics.camera_directions(index.to(self.intrinsics.fx.device), u, v)
        c2w = self.c2w[index.to(self.c2w.device)]
        dirs = (c2w[:, :3, :3] @ dirs_cam.to(c2w.dtype)[:, :, None])[:, :, 0]
        return c2w[:, :3, 3], dirs / dirs.norm(dim=-1, keepdim=True)

    def cameras(self):
        """The set's cameras as :class:`text3d.cameras.Cameras` (one ``fovy`` each), for text3d's renderers and
        :meth:`Cameras.mvp`. Only exact for a centred pinhole with square pixels: anything else raises
        :class:`DataError` (use :meth:`Intrinsics.projection` and :meth:`rays` then)."""
        from text3d.cameras import Cameras

        if not self.intrinsics.is_centred_pinhole(tol_px=1e-2):
            raise DataError(
                "these cameras have an off-centre principal point, non-square pixels or distortion, which "
                "text3d.cameras.Cameras cannot represent; use PhotoSet.rays / Intrinsics.projection"
            )
        pos = self.c2w[:, :3, 3]
        dist = pos.norm(dim=-1)
        elev = torch.rad2deg(torch.asin((pos[:, 1] / dist.clamp_min(1e-12)).clamp(-1, 1)))
        azim = torch.rad2deg(torch.atan2(pos[:, 0], pos[:, 2]))
        return Cameras(self.c2w, self.intrinsics.fovy.to(self.c2w.dtype), elev, azim, dist)

    def to(self, device: torch.device | str) -> PhotoSet:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return dataclasses.replace(
            self,
            images=self.images.to(device),
            c2w=self.c2w.to(device),
            intrinsics=self.intrinsics.to(device),
            masks=move(self.masks),
            points=move(self.points),
            point_colors=move(self.point_colors),
        )


# ---------------------------------------------------------------------------------------- building from files
@dataclass
class RawFrame:
    """One image as a loader found it, before the set is assembled: what :func:`assemble` consumes."""

    name: str
    path: Path
    c2w: np.ndarray
    """``float64 [4, 4]`` in the *input* frame, OpenGL camera axes."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    """The size the intrinsics refer to (may differ from the stored image: then they are rescaled)."""
    height: int
    distortion: tuple[float, float, float, float] | None = None
    split: str = "train"
    mask_path: Path | None = None
    per_frame_intrinsics: bool = False


def find_image(base: Path, file_path: str) -> Path | None:
    """``file_path`` relative to ``base``, as written or with an image extension added (NeRF-synthetic writes
    ``./train/r_0`` for ``train/r_0.png``)."""
    p = Path(file_path)
    p = p if p.is_absolute() else base / p
    if p.is_file():
        return p
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        q = p.with_name(p.name + ext)
        if q.is_file():
            return q
    return None


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file's header (no decoding); :class:`DataError` if it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def read_image(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(rgb uint8/uint16 [H, W, 3], alpha [H, W] | None)`` from an image file; :class:`DataError` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im).astype(np.float32) / 65535.0
                return np.repeat(arr[..., None], 3, -1), None
            im = im.convert("RGBA" if has_alpha else "RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err
    if has_alpha:
        return arr[..., :3], arr[..., 3]
    return arr, None


def read_mask(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA"):
                return np.asarray(im.getchannel("A"))
            return np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read mask {path}: {err}") from err


def find_mask(masks_dir: Path, image_name: str) -> Path | None:
    """A mask for ``image_name`` in ``masks_dir``: COLMAP's ``<name>.png`` or any image with the same stem."""
    if not masks_dir.is_dir():
        return None
    rel = Path(image_name)
    for cand in (masks_dir / (rel.as_posix() + ".png"), masks_dir / rel):
        if cand.is_file():
            return cand
    for ext in IMAGE_EXTENSIONS:
        cand = (masks_dir / rel).with_suffix(ext)
        if cand.is_file():
            return cand
    return None


def check_pose(c2w: np.ndarray, where: str) -> np.ndarray:
    """A 4x4 (or 3x4) camera-to-world matrix, finite, rigid and invertible, else one :class:`DataError` line."""
    m = np.asarray(c2w, np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise DataError(f"{where}: transform_matrix must be 4x4, got shape {list(m.shape)}")
    if not np.all(np.isfinite(m)):
        raise DataError(f"{where}: transform_matrix has NaN or infinite values")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DataError(f"{where}: transform_matrix's last row must be 0 0 0 1, got {m[3].tolist()}")
    rot = m[:3, :3]
    det = float(np.linalg.det(rot))
    if abs(det) < 1e-6:
        raise DataError(f"{where}: transform_matrix is not invertible (rotation determinant {det:.3g})")
    gram = rot.T @ rot
    if not np.allclose(gram, np.eye(3), atol=1e-3) or det < 0:
        raise DataError(
            f"{where}: transform_matrix's rotation is not orthonormal with determinant +1 (scaled or mirrored "
            "camera); expected a rigid camera-to-world pose"
        )
    u, _, vt = np.linalg.svd(rot)  # snap float noise to an exact rotation
    m = m.copy()
    m[:3, :3] = u @ vt
    return m


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average (downsizing) / bilinear (upsizing) resize of ``[H, W, C]`` float."""
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float()
    down = width < arr.shape[1] or height < arr.shape[0]
    out = F.interpolate(t, size=(height, width), mode="bilinear", antialias=down, align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def assemble(
    raw: list[RawFrame],
    *,
    frame: WorldFrame,
    format: str,
    source: str,
    points: np.ndarray | None = None,
    point_colors: np.ndarray | None = None,
    meta: dict | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> PhotoSet:
    """Read every frame's image (and mask), check sizes, rescale intrinsics, convert the frame: a :class:`PhotoSet`.

    Images of mixed sizes are resized to the most common size when every frame carries its own intrinsics
    (which are rescaled to match); with shared intrinsics that would be ambiguous, so it is an error.
    """
    if len(raw) == 0:
        raise DataError(f"{source}: no images")
    rgbs, alphas, sizes = [], [], []
    for f in raw:
        rgb, alpha = read_image(f.path)
        if alpha is None and f.mask_path is not None:
            alpha = read_mask(f.mask_path)
            if alpha.shape != rgb.shape[:2]:
                raise DataError(
                    f"mask {f.mask_path} is {alpha.shape[1]}x{alpha.shape[0]}, its image {f.name} is "
                    f"{rgb.shape[1]}x{rgb.shape[0]}"
                )
        rgbs.append(rgb)
        alphas.append(alpha)
        sizes.append((rgb.shape[1], rgb.shape[0]))
    train_count = sum(1 for f in raw if f.split == "train")
    if train_count < MIN_IMAGES:
        raise DataError(f"{source}: {train_count} training image(s); at least {MIN_IMAGES} are needed")
    size_counts = Counter(sizes)
    (tw, th), _ = size_counts.most_common(1)[0]
    if len(size_counts) > 1:
        if not all(f.per_frame_intrinsics for f in raw):
            a, b = list(size_counts)[:2]
            na = raw[sizes.index(a)].name
            nb = raw[sizes.index(b)].name
            raise DataError(
                f"{source}: images have mixed sizes ({a[0]}x{a[1]} for {na}, {b[0]}x{b[1]} for {nb}) but shared "
                "intrinsics; give fl_x fl_y cx cy w h per frame, or resize the images"
            )
    any_alpha = any(a is not None for a in alphas)
    if any_alpha and not all(a is not None for a in alphas):
        missing = raw[[a is None for a in alphas].index(True)].name
        raise DataError(
            f"{source}: some images have alpha or masks and some do not (first without: {missing})"
        )
    n = len(raw)
    images = torch.empty(n, th, tw, 3, dtype=dtype)
    masks = torch.empty(n, th, tw, 1, dtype=dtype) if any_alpha else None
    fx, fy, cx, cy, dist = [], [], [], [], []
    for i, (f, rgb, alpha) in enumerate(zip(raw, rgbs, alphas, strict=True)):
        scale = 255.0 if rgb.dtype == np.uint8 else 1.0
        img = rgb.astype(np.float32) / scale
        a = None if alpha is None else alpha.astype(np.float32)[..., None] / 255.0
        w, h = sizes[i]
        if (w, h) != (tw, th):
            img = np.clip(_resize(img, tw, th), 0.0, 1.0)
            a = None if a is None else np.clip(_resize(a, tw, th), 0.0, 1.0)
        images[i] = torch.from_numpy(img)
        if masks is not None:
            masks[i] = torch.from_numpy(a)
        sx, sy = tw / f.width, th / f.height  # intrinsics were given for f.width x f.height
        fx.append(f.fx * sx)
        fy.append(f.fy * sy)
        cx.append(f.cx * sx)
        cy.append(f.cy * sy)
        dist.append(f.distortion or (0.0, 0.0, 0.0, 0.0))
    to_world = frame.to_world_matrix
    c2w = np.stack([to_world @ f.c2w for f in raw])
    d = torch.tensor(dist, dtype=torch.float64)
    intr = Intrinsics(
        *(torch.tensor(v, dtype=torch.float64) for v in (fx, fy, cx, cy)),
        tw,
        th,
        d if bool(d.abs().max() > 0) else None,
    )
    pts = cols = None
    if points is not None and len(points):
        pts = torch.from_numpy(
            (np.asarray(points, np.float64) @ to_world[:3, :3].T) + to_world[:3, 3]
        ).float()
        if point_colors is not None:
            cols = torch.from_numpy(np.asarray(point_colors, np.float32))
    ps = PhotoSet(
        images=images,
        c2w=torch.from_numpy(c2w).float(),
        intrinsics=Intrinsics(
            *(t.float() for t in (intr.fx, intr.fy, intr.cx, intr.cy)),
            tw,
            th,
            None if intr.distortion is None else intr.distortion.float(),
        ),
        names=[f.name for f in raw],
        splits=[f.split for f in raw],
        masks=masks,
        points=pts,
        point_colors=cols,
        frame=frame,
        format=format,
        source=source,
        meta=dict(meta or {}),
    )
    return ps.to(device) if torch.device(device) != torch.device("cpu") else ps


def relative_name(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return os.fspath(path)


def fov_to_focal(fov: float, size: int) -> float:
    return 0.5 * size / math.tan(0.5 * fov)
