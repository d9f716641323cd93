"""The top-level config of a run, its presets, YAML round-trip and ``key=value`` overrides.

Each component's dataclass config lives next to the component (``NeRFFieldConfig`` in ``fields/nerf.py``,
``SDSConfig`` in ``guidance/stable_diffusion.py``, the stage configs in ``recipes/text_to_3d.py``, ...);
:class:`GenerateConfig` only composes them. Every config is
a frozen dataclass: variants are made with :func:`dataclasses.replace` or :func:`apply_overrides`, never by
mutating a shared default. YAML is read with ``yaml.safe_load`` and validated field by field, so a typo is an
error that names the valid keys, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from text3d.errors import ConfigError
from text3d.export.exporter import ExportConfig
from text3d.guidance.stable_diffusion import ModelConfig
from text3d.recipes.text_to_3d import CoarseStageConfig, RefineStageConfig
from text3d.training.trainer import TrainerConfig


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that determines a run. Saved, resolved, as ``config.yaml`` in the run folder."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    out_dir: str = "outputs"
    device: str = "auto"
    """``auto`` (cuda, then mps, then cpu), or any torch device string."""
    deterministic: bool = False
    """Deterministic kernels on GPU too (always on for CPU runs, where they make resume bit-exact)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    coarse: CoarseStageConfig = field(default_factory=CoarseStageConfig)
    refine: RefineStageConfig = field(default_factory=RefineStageConfig)
    """The DMTet refine stage, initialised from the coarse one; ``refine.steps = 0`` skips it."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    """Meshes written at the end of ``generate`` (and the defaults of ``text3d export``)."""


ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt",),
    "negative": ("negative_prompt",),
    "seed": ("seed",),
    "model": ("model.model_id",),
    "device": ("device",),
    "coarse-steps": ("coarse.steps",),
    "coarse-res": ("coarse.resolution",),
    "refine-steps": ("refine.steps",),
    "refine-res": ("refine.resolution",),
    "tet-res": ("refine.dmtet.resolution",),
    "guidance-scale": ("coarse.sds.guidance_scale", "refine.sds.guidance_scale"),
    "perp-neg": ("coarse.sds.perp_neg", "refine.sds.perp_neg"),
}
"""Short names used by CLI flags and prompt-file overrides, mapped to the config fields they set."""

PRESETS: dict[str, dict[str, str]] = {
    "quality": {},
    "fast": {"coarse.steps": "2500", "refine.steps": "1500"},
    "toy": {
        # the toy model (text3d/toy/model: 32² images of coloured primitives on white), on any CPU in a minute
        "model.model_id": "toy",
        "coarse.resolution": "32",
        "coarse.steps": "150",
        "coarse.nerf.encoding.n_levels": "8",
        "coarse.nerf.encoding.log2_hashmap_size": "14",
        "coarse.nerf.encoding.max_resolution": "128",
        "coarse.nerf.hidden_dim": "32",
        "coarse.renderer.n_samples": "32",
        "coarse.background.kind": "solid",
        "coarse.shading.albedo_only_steps": "50",
        "coarse.cameras.batch_size": "2",
        # a 4x8x8 latent pulls weakly on the geometry: a faster field and no regulariser fighting it
        "coarse.optim.lr": "0.04",
        "coarse.optim.network_lr_scale": "0.2",
        "coarse.sds.guidance_scale": "50",
        "coarse.lambda_sparsity": "0",
        "coarse.lambda_orient.start": "0",
        "coarse.lambda_orient.end": "0",
        "refine.steps": "0",
        "export.grid_resolution": "128",
        "export.texture_size": "256",
        "trainer.video_res": "128",
    },
}
"""Named override sets; ``quality`` is the anchors' defaults, ``toy`` the toy model's (tuned on it: issue 18)."""


def to_dict(cfg: Any) -> Any:
    """Plain-data (YAML-safe) form of a config: dataclasses become dicts, tuples lists."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    return cfg


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert YAML/string data to the annotated type ``tp``, or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from plain data; missing keys keep their defaults, unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def set_path(cfg: Any, dotted: str, value: Any) -> Any:
    """A copy of ``cfg`` with the field at ``dotted`` (e.g. ``coarse.sds.guidance_scale``) set to ``value``."""
    head, _, rest = dotted.partition(".")
    names = {f.name: f for f in dataclasses.fields(cfg)}
    if head not in names:
        raise ConfigError(f"unknown setting {dotted!r}; valid keys here: {', '.join(sorted(names))}")
    if rest:
        return dataclasses.replace(cfg, **{head: set_path(getattr(cfg, head), rest, value)})
    tp = typing.get_type_hints(type(cfg))[head]
    return dataclasses.replace(cfg, **{head: _coerce(tp, value, dotted)})


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Apply ``{key: value}`` where a key is a dotted field path or an :data:`ALIASES` short name."""
    for key, value in overrides.items():
        for path in ALIASES.get(key, (key,)):
            cfg = set_path(cfg, path, value)
    return cfg


def save_config(cfg: GenerateConfig, path: Path) -> Path:
    from text3d.io import write_text

    return write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))


def load_config(path: str | Path, cls: type = GenerateConfig) -> Any:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return from_dict(cls, data, where=path.name)
