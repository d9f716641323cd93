"""The web form as plain data: which knobs it offers, and how its values become a :class:`GenerateConfig`.

Precedence is the CLI's: the app's base config <- the chosen preset <- the values in the form. The form shows
the preset's numbers when the preset changes, so what the user sees is what runs. A knob is offered only when
the config has the field it sets (the refine-steps box appears once the config has a ``refine`` stage), and every
knob is set through :func:`text3d.config.apply_overrides`, with the CLI's short names where one exists, and the
result is range-checked by :func:`text3d.validation.check_settings`, so the app can never accept a setting the CLI
would reject, and rejects what the CLI rejects with the same words.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from text3d.config import ALIASES, PRESETS, GenerateConfig, apply_overrides
from text3d.errors import ConfigError, PromptError
from text3d.validation import check_prompt, check_settings

STAGES = ("coarse", "refine")
"""Stage sub-configs a knob may reach, in run order; those missing from the config are skipped."""


@dataclass(frozen=True)
class FormValues:
    """Everything the form (or an API caller) sends. ``None`` means "keep the preset's value"."""

    prompt: str
    negative_prompt: str = ""
    preset: str = "quality"
    seed: int | None = None
    """A negative seed draws a random one (recorded in the run's config.yaml)."""
    steps: int | None = None
    """Coarse (NeRF) stage steps."""
    guidance_scale: float | None = None
    resolution: int | None = None
    """Coarse stage render size in pixels."""
    refine_steps: int | None = None
    """Refine (DMTet mesh) stage steps; ignored when the config has no refine stage."""
    refine_resolution: int | None = None
    """Refine stage render size in pixels."""
    perp_neg: bool | None = None
    view_dependent: bool | None = None
    weighting: str | None = None
    texture_size: int | None = None
    """Exported texture edge in pixels; ignored when the config has no exporter."""


def has_path(cfg: Any, dotted: str) -> bool:
    try:
        get_path(cfg, dotted)
    except (AttributeError, TypeError):
        return False
    return True


def get_path(cfg: Any, dotted: str) -> Any:
    """The value at ``coarse.sds.guidance_scale``-style ``dotted`` in a (nested) dataclass config."""
    value = cfg
    for name in dotted.split("."):
        if not dataclasses.is_dataclass(value):
            raise AttributeError(dotted)
        value = getattr(value, name)
    return value


def _stage_paths(cfg: GenerateConfig, suffix: str) -> tuple[str, ...]:
    return tuple(f"{s}.{suffix}" for s in STAGES if has_path(cfg, f"{s}.{suffix}"))


def knob_paths(cfg: GenerateConfig) -> dict[str, tuple[str, ...]]:
    """Form field -> the config paths it sets, for the knobs this config supports (absent = not offered)."""

    def alias_or(alias: str, *fallback: str) -> tuple[str, ...]:
        paths = ALIASES.get(alias, fallback)
        return tuple(p for p in paths if has_path(cfg, p))

    knobs = {
        "negative_prompt": alias_or("negative", "negative_prompt"),
        "seed": alias_or("seed", "seed"),
        "steps": alias_or("coarse-steps", "coarse.steps"),
        "guidance_scale": alias_or("guidance-scale", *_stage_paths(cfg, "sds.guidance_scale")),
        "resolution": alias_or("coarse-res", "coarse.resolution"),
        "refine_steps": alias_or("refine-steps", "refine.steps"),
        "refine_resolution": alias_or("refine-res", "refine.resolution"),
        "perp_neg": alias_or("perp-neg", *_stage_paths(cfg, "sds.perp_neg")),
        "view_dependent": _stage_paths(cfg, "sds.view_dependent"),
        "weighting": _stage_paths(cfg, "sds.weighting"),
        "texture_size": alias_or("texture-size", "export.texture_size"),
    }
    return {name: paths for name, paths in knobs.items() if paths}


def with_preset(base: GenerateConfig, preset: str) -> GenerateConfig:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return apply_overrides(base, PRESETS[preset])


def form_defaults(base: GenerateConfig, preset: str) -> FormValues:
    """The values the form shows for ``preset``: the base config with the preset applied."""
    cfg = with_preset(base, preset)
    values = {name: get_path(cfg, paths[0]) for name, paths in knob_paths(cfg).items()}
    return FormValues(prompt=cfg.prompt, preset=preset, **values)


def config_from_form(base: GenerateConfig, values: FormValues) -> GenerateConfig:
    """The config a form submission runs: ``base`` <- preset <- the form's non-``None`` values.

    Raises:
        PromptError: the prompt is empty or longer than :data:`text3d.validation.MAX_PROMPT_CHARS` (the app
            shows this and starts no job).
        ConfigError: an unknown preset, a value the config rejects, or one outside the ranges of
            :func:`text3d.validation.check_settings` (the same checks as the CLI, YAML configs and batch lines).
    """
    prompt = (values.prompt or "").strip()
    if not prompt:
        raise PromptError("the prompt is empty; describe the object, e.g. “a ceramic owl mug”")
    check_prompt(prompt)
    check_prompt(values.negative_prompt or "", "negative prompt")
    cfg = apply_overrides(with_preset(base, values.preset), {"prompt": prompt})
    overrides: dict[str, Any] = {}
    for name, paths in knob_paths(cfg).items():
        value = getattr(values, name)
        if value is None:
            continue
        if name == "seed" and int(value) < 0:
            value = random.SystemRandom().randrange(2**31)
        for path in paths:
            overrides[path] = value
    cfg = apply_overrides(cfg, overrides)
    check_settings(cfg)
    return cfg
