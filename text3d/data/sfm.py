"""Structure-from-motion for plain photos with ``pycolmap`` (PyPI, CPU): SIFT, exhaustive matching, incremental
mapping; the largest model is written as a COLMAP sparse model and read back by :func:`load_colmap`.

``pycolmap`` is optional and imported only here. nerfstudio's users complain most about COLMAP registering too few
images, so the report names every image that was not registered, and too few registered is a one-line error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from text3d.data.colmap import load_colmap
from text3d.data.errors import DataError
from text3d.data.photoset import IMAGE_EXTENSIONS, PhotoSet


@dataclass(frozen=True)
class SfMConfig:
    camera_model: str = "SIMPLE_RADIAL"
    """COLMAP camera model to estimate (``PINHOLE`` / ``SIMPLE_PINHOLE`` for distortion-free renders)."""
    single_camera: bool = True
    """One camera shared by all images (a photo set from one camera and zoom)."""
    max_image_size: int = 1600
    min_registered_fraction: float = 0.5
    """Fewer registered images than this fraction is an error (naming the unregistered ones)."""
    num_threads: int = -1
    """-1: all cores."""
    seed: int = 0


@dataclass(frozen=True)
class SfMReport:
    registered: list[str]
    unregistered: list[str]
    model_dir: Path
    points: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "registered": len(self.registered),
            "unregistered": self.unregistered,
            "points": self.points,
        }


def image_files(images_dir: Path) -> list[str]:
    return sorted(
        p.relative_to(images_dir).as_posix()
        for p in images_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def run_sfm(
    images_dir: str | os.PathLike, work_dir: str | os.PathLike, cfg: SfMConfig = SfMConfig()
) -> SfMReport:
    """Run SfM on every image in ``images_dir``; write the largest model to ``work_dir/sparse/0``.

    Raises:
        DataError: pycolmap missing, no images, or too few images registered (the line names them).
    """
    try:
        import pycolmap
    except ImportError as err:
        raise DataError("structure-from-motion needs pycolmap: pip install pycolmap") from err
    images_dir, work = Path(images_dir), Path(work_dir)
    names = image_files(images_dir)
    if len(names) < 3:
        raise DataError(f"{images_dir}: {len(names)} image(s); structure-from-motion needs at least 3")
    work.mkdir(parents=True, exist_ok=True)
    db = work / "database.db"
    if db.exists():
        db.unlink()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = cfg.camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = cfg.max_image_size
    extraction.num_threads = cfg.num_threads
    extraction.use_gpu = False
    mode = pycolmap.CameraMode.SINGLE if cfg.single_camera else pycolmap.CameraMode.AUTO
    pycolmap.extract_features(
        db, images_dir, image_names=names, camera_mode=mode, reader_options=reader, extraction_options=extraction,
        device=pycolmap.Device.cpu,
    )  # fmt: skip
    pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = cfg.num_threads
    opts.random_seed = cfg.seed
    raw_out = work / "models"
    if raw_out.exists():
        shutil.rmtree(raw_out)
    raw_out.mkdir()
    models = pycolmap.incremental_mapping(db, images_dir, raw_out, options=opts)
    if not models:
        raise DataError(
            f"{images_dir}: structure-from-motion registered 0 of {len(names)} images (no initial pair found); "
            "more overlap between photos or more texture is needed"
        )
    best = max(models.values(), key=lambda r: r.num_reg_images())
    registered = sorted(img.name for img in best.images.values() if img.has_pose)
    unregistered = [n for n in names if n not in set(registered)]
    if len(registered) < max(3, cfg.min_registered_fraction * len(names)):
        shown = ", ".join(unregistered[:10]) + (" ..." if len(unregistered) > 10 else "")
        raise DataError(
            f"{images_dir}: structure-from-motion registered only {len(registered)} of {len(names)} images "
            f"(not registered: {shown})"
        )
    model_dir = work / "sparse" / "0"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    best.write(model_dir)
    return SfMReport(registered, unregistered, model_dir, points=best.num_points3D())


def load_unposed(
    path: str | os.PathLike,
    *,
    cfg: SfMConfig = SfMConfig(),
    work_dir: str | os.PathLike | None = None,
    orient: str = "up",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> PhotoSet:
    """Plain photos (``path/images`` or ``path``) -> SfM -> :class:`PhotoSet` of the registered images.

    ``work_dir`` keeps the database and model (default: a temporary folder, removed afterwards). The report goes
    into ``photos.meta["sfm"]``: registered count, unregistered names, points.
    """
    folder = Path(path)
    images_dir = folder / "images" if (folder / "images").is_dir() else folder
    tmp = None
    if work_dir is None:
        tmp = tempfile.mkdtemp(prefix="text3d-sfm-")
        work_dir = tmp
    try:
        report = run_sfm(images_dir, work_dir, cfg)
        photos = load_colmap(
            report.model_dir, images_dir=images_dir, orient=orient, dtype=dtype, device=device
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    photos.meta["sfm"] = report.to_dict()
    photos.format = "sfm"
    photos.source = str(folder)
    return photos
