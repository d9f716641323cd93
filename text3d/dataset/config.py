"""Every randomisation range of ``text3d dataset`` as a dataclass value.

One :class:`DatasetConfig` says everything that decides the images and labels besides the assets; it is saved
beside the dataset (``dataset.yaml``), can be loaded back (``--config``), and each field can be set by dotted path
(``--set scene.objects=[1,6]``). Ranges are ``(low, high)`` and drawn uniformly unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from text3d.errors import ConfigError
from text3d.validation import choice, integer, interval, number

FORMATS = ("yolo", "yolo-seg", "coco")


@dataclass(frozen=True)
class SceneConfig:
    """What is in a picture and where the camera is."""

    objects: tuple[int, int] = (1, 4)
    """Labelled objects per image (inclusive range); the same asset may appear twice."""
    distractors: tuple[int, int] = (0, 2)
    """Unlabelled primitives (box, sphere, cylinder, torus) of random colour; they occlude like any object."""
    size: tuple[float, float] = (0.5, 1.2)
    """Largest side of an object, world units (assets are normalised to 1)."""
    depth: tuple[float, float] = (2.5, 5.0)
    """Distance of an object's centre in front of the camera."""
    screen_extent: float = 1.1
    """Object centres are drawn in ``[-e, e]`` of the image's normalised coordinates: > 1 lets objects be cut by
    the border (truncation), and all of them can overlap."""
    elevation: tuple[float, float] = (-10.0, 60.0)
    """Camera elevation, degrees (the world is +Y up)."""
    azimuth: tuple[float, float] = (-180.0, 180.0)
    roll: tuple[float, float] = (-20.0, 20.0)
    """Rotation of the camera about its viewing axis, degrees."""
    fov: tuple[float, float] = (35.0, 60.0)
    """Vertical field of view, degrees."""


@dataclass(frozen=True)
class LightConfig:
    """One directional light plus ambient light; shading is Lambertian on linear colours."""

    elevation: tuple[float, float] = (10.0, 80.0)
    """Light direction above the camera's horizon, degrees."""
    azimuth: tuple[float, float] = (-120.0, 120.0)
    """Light direction around the viewing axis, degrees (0 = from behind the camera)."""
    intensity: tuple[float, float] = (0.5, 1.5)
    temperature: tuple[float, float] = (3000.0, 9000.0)
    """Colour temperature, kelvin (3000 warm, 6500 white, 9000 blue)."""
    ambient: tuple[float, float] = (0.1, 0.5)


@dataclass(frozen=True)
class BackgroundConfig:
    """Behind the objects: procedural textures, plain colours, or the user's pictures."""

    procedural: float = 0.6
    """Relative weight of procedural textures (checker, stripes, smooth noise, gradients)."""
    solid: float = 0.2
    images: float = 0.2
    """Weight of pictures from ``folder`` (ignored when no folder is given)."""
    folder: str | None = None
    """A folder of JPEG / PNG pictures, randomly cropped and resized."""


@dataclass(frozen=True)
class EffectsConfig:
    """Camera-like degradations applied after rendering (they never change the labels)."""

    noise: tuple[float, float] = (0.0, 0.03)
    """Standard deviation of Gaussian pixel noise, in [0, 1] units."""
    blur_probability: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    """Gaussian blur, pixels."""
    jpeg_quality: tuple[int, int] = (70, 95)


@dataclass(frozen=True)
class LabelConfig:
    """Which objects get a label and how masks are written."""

    min_visible_pixels: int = 16
    """An object showing fewer pixels (hidden, off-image, or tiny) gets no label."""
    coco_masks: str = "rle"
    """COCO segmentation: ``rle`` (exact, holes kept) or ``polygon`` (one ring with holes joined by cuts)."""


@dataclass(frozen=True)
class SearchConfig:
    """Edge-case search (``--target``): gradient descent on scene parameters until each target is met."""

    targets: tuple[str, ...] = ()
    """``name=value`` items, e.g. ``occlusion=0.6``, ``brightness=0.08`` (see ``text3d.dataset.edge_cases``)."""
    steps: int = 60
    """Most Adam steps per image; the search stops early once every target is within ``tolerance``."""
    lr: float = 0.08
    tolerance: float = 0.05
    restarts: int = 2
    """Fresh random starts tried when a search ends outside the tolerance."""


@dataclass(frozen=True)
class DatasetConfig:
    """Top-level settings of ``text3d dataset`` (the assets and output folder are arguments, not config)."""

    images: int = 100
    size: int = 640
    """Square image side, pixels."""
    val: float = 0.2
    """Fraction of images in the validation split."""
    format: str = "yolo"
    """``yolo`` (boxes), ``yolo-seg`` (polygons) or ``coco`` (one JSON per split)."""
    seed: int = 0
    antialias: bool = True
    """Blend colours across silhouettes (labels stay the pixel-centre masks)."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:1``, ... or ``auto`` (CUDA when available); CUDA rasterizes with nvdiffrast if
    installed."""
    scene: SceneConfig = field(default_factory=SceneConfig)
    light: LightConfig = field(default_factory=LightConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    effects: EffectsConfig = field(default_factory=EffectsConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


_CHECKS: dict[str, Any] = {
    "images": integer(1),
    "size": integer(16, 8192),
    "val": number(0.0, 1.0, hi_open=True),
    "format": choice(*FORMATS),
    "scene.objects": interval(0, 1000),
    "scene.distractors": interval(0, 1000),
    "scene.size": interval(0.0, 1e6, strict=False),
    "scene.depth": interval(0.0, 1e6, open_ends=True),
    "scene.screen_extent": number(0.0, 10.0, lo_open=True),
    "scene.elevation": interval(-90.0, 90.0),
    "scene.azimuth": interval(-360.0, 360.0),
    "scene.roll": interval(-180.0, 180.0),
    "scene.fov": interval(1.0, 170.0),
    "light.elevation": interval(-90.0, 90.0),
    "light.azimuth": interval(-180.0, 180.0),
    "light.intensity": interval(0.0, 100.0),
    "light.temperature": interval(1000.0, 40000.0),
    "light.ambient": interval(0.0, 10.0),
    "background.procedural": number(0.0),
    "background.solid": number(0.0),
    "background.images": number(0.0),
    "effects.noise": interval(0.0, 1.0),
    "effects.blur_probability": number(0.0, 1.0),
    "effects.blur_sigma": interval(0.0, 100.0),
    "effects.jpeg_quality": interval(1, 100),
    "labels.min_visible_pixels": integer(1),
    "labels.coco_masks": choice("rle", "polygon"),
    "search.steps": integer(1),
    "search.lr": number(0.0, lo_open=True),
    "search.tolerance": number(0.0, 1.0, lo_open=True),
    "search.restarts": integer(0),
}


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_config(cfg: DatasetConfig) -> None:
    """Raise :class:`ConfigError` with one line for the first setting out of range."""
    for path, check in _CHECKS.items():
        value = _get(cfg, path)
        why = check(value)
        if why is not None:
            flag = {"images": "--images", "size": "--size", "val": "--val", "format": "--format"}.get(
                path, path
            )
            raise ConfigError(f"{flag} must be {why}, got {value!r}")
    try:
        torch.device(cfg.device if cfg.device != "auto" else "cpu")
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}") from None
    if cfg.scene.objects[0] < 0 or cfg.scene.objects[1] < 1:
        raise ConfigError(f"scene.objects must allow at least one object, got {cfg.scene.objects!r}")
    if cfg.scene.size[0] <= 0:
        raise ConfigError(f"scene.size must be positive, got {cfg.scene.size!r}")
    weights = (
        cfg.background.procedural
        + cfg.background.solid
        + (cfg.background.images if cfg.background.folder else 0)
    )
    if weights <= 0:
        raise ConfigError(
            "background weights are all 0: give background.procedural, solid or images (with a folder)"
        )
