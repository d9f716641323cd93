"""Dataset layouts on disk: Ultralytics YOLO (boxes or polygons) and COCO, written all-or-nothing.

Everything is written into a hidden staging folder beside the target (``.<name>.partial``) and renamed onto the
target only when the last file is written, so a killed run never leaves a dataset that looks complete. Both layouts
share ``images/{train,val}/<stem>.jpg``, ``meta/{train,val}/<stem>.json`` (the scene and what the edge-case search
achieved, per image) and ``dataset.yaml`` (the resolved config, assets and class names: what made the dataset).

- YOLO (``yolo``, ``yolo-seg``): ``labels/{train,val}/<stem>.txt`` (an empty file for a background-only image)
  and ``data.yaml`` with ``path``, ``train``, ``val``, ``names`` (Ultralytics' contract).
- COCO (``coco``): ``annotations/instances_{train,val}.json`` with RLE or polygon masks; category ids are class
  ids + 1.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import yaml

from text3d.dataset.labels import ObjectLabel, coco_annotation, yolo_rows
from text3d.errors import ConfigError

SPLITS = ("train", "val")


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty target folder unless ``overwrite`` (before any rendering starts)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} is not empty; choose a new folder or pass --overwrite")


class DatasetWriter:
    """The shared part: images, per-image metadata, ``dataset.yaml``, staging and the final rename."""

    def __init__(self, out: Path, names: tuple[str, ...], overwrite: bool = False):
        self.out = Path(out).absolute()
        self.names = names
        check_out(self.out, overwrite)
        self.stage = staging_folder(self.out)
        if self.stage.exists():  # left by a killed run of ours: its name says what it is
            shutil.rmtree(self.stage)
        self.stage.mkdir(parents=True)

    def add(
        self,
        split: str,
        stem: str,
        image: bytes,
        labels: list[ObjectLabel],
        object_id: np.ndarray,
        meta: dict,
    ) -> None:
        """One image with its labels (``object_id`` is the ``[H, W]`` object index map the labels came from)."""
        for sub, name, data in (("images", f"{stem}.jpg", image), ("meta", f"{stem}.json", None)):
            folder = self.stage / sub / split
            folder.mkdir(parents=True, exist_ok=True)
            if data is None:
                (folder / name).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
            else:
                (folder / name).write_bytes(data)
        self.add_labels(split, stem, labels, object_id)

    def add_labels(self, split: str, stem: str, labels: list[ObjectLabel], object_id: np.ndarray) -> None:
        raise NotImplementedError

    def finish_layout(self, splits: list[str]) -> None:
        """Files written once all images are in (``data.yaml``, COCO JSON)."""

    def finish(self, settings: dict, splits: list[str]) -> Path:
        """Write the summary files, then move the staging folder onto the target in one rename."""
        self.finish_layout(splits)
        text = yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)
        (self.stage / "dataset.yaml").write_text(text, encoding="utf-8")
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.stage, self.out)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


class YoloWriter(DatasetWriter):
    """Ultralytics' layout; ``segment`` writes polygon rows instead of boxes."""

    def __init__(self, out: Path, names: tuple[str, ...], overwrite: bool = False, segment: bool = False):
        super().__init__(out, names, overwrite)
        self.segment = segment

    def add_labels(self, split: str, stem: str, labels: list[ObjectLabel], object_id: np.ndarray) -> None:
        folder = self.stage / "labels" / split
        folder.mkdir(parents=True, exist_ok=True)
        h, w = object_id.shape
        (folder / f"{stem}.txt").write_text(yolo_rows(labels, w, h, self.segment), encoding="utf-8")

    def finish_layout(self, splits: list[str]) -> None:
        data = {
            "path": str(self.out),
            "train": "images/train",
            "val": "images/val" if "val" in splits else "images/train",
            "names": dict(enumerate(self.names)),
        }
        (self.stage / "data.yaml").write_text(
            yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8"
        )


class CocoWriter(DatasetWriter):
    """COCO instances JSON per split; masks as compressed RLE (exact) or polygons."""

    def __init__(self, out: Path, names: tuple[str, ...], overwrite: bool = False, masks: str = "rle"):
        super().__init__(out, names, overwrite)
        self.masks = masks
        self.images: dict[str, list[dict]] = {s: [] for s in SPLITS}
        self.annotations: dict[str, list[dict]] = {s: [] for s in SPLITS}

    def add_labels(self, split: str, stem: str, labels: list[ObjectLabel], object_id: np.ndarray) -> None:
        h, w = object_id.shape
        image_id = sum(len(v) for v in self.images.values()) + 1
        self.images[split].append({"id": image_id, "file_name": f"{stem}.jpg", "width": w, "height": h})
        for lab in labels:
            ann = coco_annotation(lab, object_id == lab.index, self.masks)
            ann.update(id=sum(len(v) for v in self.annotations.values()) + 1, image_id=image_id)
            self.annotations[split].append(ann)

    def finish_layout(self, splits: list[str]) -> None:
        folder = self.stage / "annotations"
        folder.mkdir(parents=True, exist_ok=True)
        categories = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(self.names)]
        for split in splits:
            doc = {
                "info": {"description": "text3d synthetic dataset"},
                "images": self.images[split],
                "annotations": self.annotations[split],
                "categories": categories,
            }
            (folder / f"instances_{split}.json").write_text(json.dumps(doc), encoding="utf-8")


def make_writer(
    fmt: str, out: Path, names: tuple[str, ...], overwrite: bool, coco_masks: str
) -> DatasetWriter:
    if fmt == "coco":
        return CocoWriter(out, names, overwrite, coco_masks)
    return YoloWriter(out, names, overwrite, segment=fmt == "yolo-seg")
