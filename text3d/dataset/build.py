"""The library call behind ``text3d dataset``: assets in, a finished YOLO or COCO dataset out.

Image ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` alone, so the same seed and config give
byte-identical images and labels whatever else happens (and any image can be re-made on its own:
:func:`make_image`). The first ``round(images * (1 - val))`` images are ``train``, the rest ``val``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from text3d.config import to_dict
from text3d.dataset.assets import MeshAsset, load_assets
from text3d.dataset.config import DatasetConfig, check_config
from text3d.dataset.edge_cases import Target, parse_targets, search
from text3d.dataset.labels import ObjectLabel, extract_labels
from text3d.dataset.scene import (
    Scene,
    apply_effects,
    background_images,
    encode_jpeg,
    make_background,
    render_scene,
    sample_scene,
)
from text3d.dataset.writers import check_out, make_writer

ProgressFn = Callable[[int, int, "ImageResult"], None]


@dataclass
class ImageResult:
    """One finished image: its JPEG bytes, labels, object-id map and metadata (what the writers store)."""

    index: int
    split: str
    stem: str
    jpeg: bytes
    labels: list[ObjectLabel]
    object_id: np.ndarray
    meta: dict


@dataclass
class DatasetResult:
    out: Path
    images: int
    labels: int
    seconds: float
    unreached: list[str]
    """One line per image whose edge-case targets were not met."""

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def split_of(index: int, cfg: DatasetConfig) -> str:
    n_train = cfg.images - int(round(cfg.images * cfg.val))
    return "train" if index < n_train else "val"


def scene_meta(scene: Scene, counts: np.ndarray, labels: list[ObjectLabel], names: tuple[str, ...]) -> dict:
    """Plain-data description of a scene, enough to re-render it independently from the asset files."""
    labelled = {lab.index for lab in labels}
    objects = []
    for k, obj in enumerate(scene.objects):
        objects.append(
            {
                "asset": str(obj.mesh.source) if obj.mesh.source is not None else obj.mesh.name,
                "class_id": obj.class_id if obj.class_id >= 0 else None,
                "class_name": names[obj.class_id] if obj.class_id >= 0 else None,
                "matrix": (obj.matrix @ obj.mesh.normalize).tolist(),
                "visible_pixels": int(counts[k]),
                "labelled": k in labelled,
            }
        )
    return {
        "camera": {"c2w": scene.c2w.tolist(), "fovy_deg": scene.fovy, "convention": "OpenGL, looks down -Z"},
        "light": {
            "direction": scene.light_direction.tolist(),
            "intensity": scene.light_intensity,
            "color": scene.light_color.tolist(),
            "ambient": scene.ambient,
        },
        "background": scene.background,
        "effects": {"noise": scene.noise, "blur": scene.blur, "jpeg_quality": scene.jpeg_quality},
        "objects": objects,
        "search": scene.search,
    }


def make_image(
    index: int,
    cfg: DatasetConfig,
    assets: list[MeshAsset],
    names: tuple[str, ...],
    targets: list[Target] | None = None,
    backgrounds: list[Path] | None = None,
) -> ImageResult:
    """Draw, search (if targets), render and label image ``index`` of the dataset."""
    device = resolve_device(cfg.device)
    rng = np.random.default_rng([cfg.seed, index])
    scene = sample_scene(rng, cfg, assets, names, backgrounds or [])
    if targets:
        scene.search = search(scene, targets, cfg.search, rng, cfg.size, device)
    bg = torch.from_numpy(make_background(scene.background, cfg.size))
    with torch.no_grad():
        r = render_scene(scene, cfg.size, bg, device, antialias=cfg.antialias)
    object_id = r.object_id.cpu().numpy()
    img = apply_effects(r.rgb.cpu().numpy(), scene)
    polygons = cfg.format == "yolo-seg" or (cfg.format == "coco" and cfg.labels.coco_masks == "polygon")
    class_ids = [o.class_id for o in scene.objects]
    labels, counts = extract_labels(object_id, class_ids, cfg.labels.min_visible_pixels, polygons)
    split = split_of(index, cfg)
    stem = f"{index:06d}"
    meta = {"index": index, "split": split, "image": f"images/{split}/{stem}.jpg", "size": cfg.size}
    meta.update(scene_meta(scene, counts, labels, names))
    return ImageResult(index, split, stem, encode_jpeg(img, scene.jpeg_quality), labels, object_id, meta)


def build_dataset(
    assets: list[str | Path],
    out: str | Path,
    cfg: DatasetConfig,
    classes_file: str | Path | None = None,
    overwrite: bool = False,
    callback: ProgressFn | None = None,
) -> DatasetResult:
    """Render ``cfg.images`` random scenes of ``assets`` into a dataset at ``out`` (all-or-nothing).

    Args:
        assets: GLB / OBJ files, run folders, batch folders.
        classes_file: YAML / JSON ``asset: class`` mapping (default: names from prompts / file names).
        callback: called after each image with ``(done, total, image)``; may raise to stop (nothing is kept).

    Raises:
        ConfigError: bad settings or assets, before anything is rendered.
    """
    check_config(cfg)
    targets = parse_targets(cfg.search.targets)
    out = Path(out)
    check_out(out.absolute(), overwrite)
    meshes, names = load_assets(list(assets), Path(classes_file) if classes_file else None)
    backgrounds = background_images(cfg.background.folder)
    writer = make_writer(cfg.format, out, names, overwrite, cfg.labels.coco_masks)
    t0 = time.perf_counter()
    n_labels, unreached, splits = 0, [], set()
    try:
        for i in range(cfg.images):
            res = make_image(i, cfg, meshes, names, targets, backgrounds)
            writer.add(res.split, res.stem, res.jpeg, res.labels, res.object_id, res.meta)
            n_labels += len(res.labels)
            splits.add(res.split)
            s = res.meta.get("search") or {}
            if targets and not s.get("reached", False):
                unreached.append(_unreached_line(res, s, cfg))
            if callback is not None:
                callback(i + 1, cfg.images, res)
        settings = {
            "config": to_dict(cfg),
            "names": list(names),
            "assets": [{"file": str(m.source), "class": m.class_name} for m in meshes],
        }
        seconds = time.perf_counter() - t0
        path = writer.finish(settings, [s for s in ("train", "val") if s in splits])
    except BaseException:
        writer.abort()
        raise
    return DatasetResult(path, cfg.images, n_labels, seconds, unreached)


def _unreached_line(res: ImageResult, s: dict, cfg: DatasetConfig) -> str:
    if "reason" in s:
        return f"image {res.stem}: targets not reached ({s['reason']})"
    parts = ", ".join(f"{k}={s['goals'][k]:g} got {v:.3f}" for k, v in s["achieved"].items())
    return f"image {res.stem}: targets not reached after {s['steps']} steps ({parts}; tolerance {cfg.search.tolerance:g})"
