"""One set of range checks for the settings of a run, shared by the CLI, YAML configs, batch lines and the web app.

:func:`check_settings` raises :class:`~text3d.errors.ConfigError` with one line naming the setting, its value and
what is allowed, and returns one line per value that is legal but almost surely a mistake (a guidance scale of
1e9). :func:`validate_settings` does the same and also issues those lines as :class:`SuspiciousSettingWarning`.
They run before any run folder exists: ``generate`` at its start, the prompt-file parser per line (so a bad line
is reported as ``file:line``), and the web app's form before a job is queued.

The checks read the config by dotted path and skip a path the config does not have, so a config without (say) a
refine stage is checked for what it has. Why each range is what it is:

- render sizes are even and at least 16 pixels: the turntable is encoded with libx264, which refuses odd frame
  sizes (``--coarse-res 7`` and ``17`` wrote a 0-byte video and called the run completed), and below 16 pixels
  there is nothing left to score (``--coarse-res 0`` divided by zero);
- a stage with 0 steps is skipped, so at least one stage needs steps, or a run "completes" having trained nothing;
- the DMTet grid is even and within what :func:`text3d.fields.dmtet.build_tet_grid` builds, and warned about
  above 256 (over 100 million tets);
- SDS timesteps are fractions of the schedule strictly inside (0, 1), low before high.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from text3d.errors import ConfigError, PromptError

STAGES = ("coarse", "refine")

MIN_RESOLUTION = 16
MAX_RESOLUTION = 4096
"""Training, preview and video render sizes in pixels (even numbers)."""
MIN_TEXTURE = 16
MAX_TEXTURE = 8192
MIN_TET_RESOLUTION = 8
MAX_TET_RESOLUTION = 512
WARN_TET_RESOLUTION = 256
WARN_GUIDANCE_SCALE = 1000.0
"""SDS uses ~100; DreamFusion's largest is 100, threestudio's ProlificDreamer 7.5."""
WARN_STEPS = 1_000_000
MAX_PROMPT_CHARS = 1000
"""Longest prompt the web app accepts. CLIP reads 77 tokens, a few hundred characters at most, so a longer
prompt is a pasting accident; batch mode's line limit is the same number."""

Check = Callable[[Any], str | None]
"""A check returns ``None`` for a good value, or the allowed range in words."""


class SuspiciousSettingWarning(UserWarning):
    """A setting is legal but almost surely a mistake (the run goes ahead)."""


# ------------------------------------------------------------------------------------------------ checks
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(lo: int, hi: int | None = None, *, even: bool = False, zero: bool = False) -> Check:
    """An integer in ``[lo, hi]`` (``even`` if asked); ``zero`` also allows 0 (meaning "auto" or "off")."""
    kind = f"an {'even ' if even else ''}integer"
    words = f"{kind} from {lo} to {hi}" if hi is not None else f"{kind} >= {lo}"
    if zero:
        words = f"0 (auto) or {words}"

    def check(value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return words
        if zero and value == 0:
            return None
        if value < lo or (hi is not None and value > hi) or (even and value % 2):
            return words
        return None

    return check


def number(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    """A finite number in the interval from ``lo`` to ``hi`` (each end open or closed)."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    words = (
        f"a number in {left}{lo:g}, {hi:g}{right}"
        if hi is not None
        else f"a number {'>' if lo_open else '>='} {lo:g}"
    )

    def check(value: Any) -> str | None:
        if not _number(value):
            return words
        if value < lo or (lo_open and value == lo):
            return words
        if hi is not None and (value > hi or (hi_open and value == hi)):
            return words
        return None

    return check


def optional(check: Check) -> Check:
    def inner(value: Any) -> str | None:
        if value is None:
            return None
        why = check(value)
        return None if why is None else f"unset or {why}"

    return inner


def interval(lo: float, hi: float, *, open_ends: bool = False, strict: bool = False) -> Check:
    """A pair ``(a, b)`` with ``lo <= a <= b <= hi`` (``<`` at the ends if ``open_ends``; ``a < b`` if ``strict``)."""
    ends = f"({lo:g}, {hi:g})" if open_ends else f"[{lo:g}, {hi:g}]"
    words = f"two numbers in {ends}, the first {'below' if strict else 'at most'} the second"

    def check(value: Any) -> str | None:
        if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(_number(v) for v in value):
            return words
        a, b = value
        if (a <= lo or b >= hi) if open_ends else (a < lo or b > hi):
            return words
        if a > b or (strict and a == b):
            return words
        return None

    return check


def choice(*choices: str) -> Check:
    words = f"one of {', '.join(choices)}"
    return lambda value: None if value in choices else words


def _sds_weightings() -> tuple[str, ...]:
    from text3d.guidance.stable_diffusion import WEIGHTINGS

    return WEIGHTINGS


RESOLUTION = integer(MIN_RESOLUTION, MAX_RESOLUTION, even=True)
AUTO_RESOLUTION = integer(MIN_RESOLUTION, MAX_RESOLUTION, even=True, zero=True)
POSITIVE = integer(1)
COUNT = integer(0)
FRACTION = number(0.0, 1.0)

STAGE_RULES: dict[str, Check] = {
    "steps": COUNT,
    "resolution": RESOLUTION,
    "sds.guidance_scale": number(0.0, lo_open=True),
    "sds.t_range": interval(0.0, 1.0, open_ends=True, strict=True),
    "sds.grad_clip": optional(number(0.0, lo_open=True)),
    "sds.perp_neg_weight": number(0.0),
    "cameras.batch_size": POSITIVE,
    "cameras.fovy_range": interval(0.0, 180.0, open_ends=True),
    "cameras.elevation_range": interval(-90.0, 90.0),
    "cameras.distance_range": interval(0.0, math.inf, open_ends=True),
    "shading.albedo_only_steps": COUNT,
    "shading.albedo_prob": FRACTION,
    "shading.textureless_prob": FRACTION,
    "optim.lr": number(0.0, lo_open=True),
}
"""Checked in each of :data:`STAGES` that the config has."""

RULES: dict[str, Check] = {
    "model.dtype": choice("auto", "fp32", "fp16", "bf16"),
    "coarse.renderer.n_samples": POSITIVE,
    "coarse.occupancy.resolution": POSITIVE,
    "coarse.nerf.hidden_dim": POSITIVE,
    "coarse.nerf.encoding.n_levels": POSITIVE,
    "coarse.nerf.encoding.log2_hashmap_size": integer(8, 30),
    "refine.dmtet.resolution": integer(MIN_TET_RESOLUTION, MAX_TET_RESOLUTION, even=True),
    "refine.init_views": POSITIVE,
    "refine.init_resolution": integer(8, MAX_RESOLUTION),
    "trainer.log_every": POSITIVE,
    "trainer.checkpoint_every": POSITIVE,
    "trainer.preview_every": COUNT,
    "trainer.preview_every_s": number(0.0),
    "trainer.preview_views": POSITIVE,
    "trainer.preview_res": AUTO_RESOLUTION,
    "trainer.video_frames": COUNT,
    "trainer.video_fps": integer(1, 240),
    "trainer.video_res": AUTO_RESOLUTION,
    "export.texture_size": integer(MIN_TEXTURE, MAX_TEXTURE),
    "export.target_faces": integer(4),
    "export.grid_resolution": integer(MIN_RESOLUTION, 2048),
    "export.threshold_views": POSITIVE,
    "export.threshold_resolution": integer(MIN_RESOLUTION, MAX_RESOLUTION),
    "export.opacity_level": number(0.0, 1.0, lo_open=True, hi_open=True),
    "export.size": number(0.0, lo_open=True),
    "export.uv_padding": COUNT,
    "export.min_component_fraction": FRACTION,
}


# ------------------------------------------------------------------------------------------------ the validator
_MISSING = object()


def _get(cfg: Any, dotted: str) -> Any:
    value = cfg
    for name in dotted.split("."):
        value = getattr(value, name, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _label(path: str) -> str:
    """``coarse.resolution (coarse-res)``: the dotted path, with the CLI / prompt-file short name if it has one."""
    from text3d.config import ALIASES

    short = next((alias for alias, paths in ALIASES.items() if path in paths and alias != path), None)
    return f"{path} ({short})" if short else path


def _fail(path: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{_label(path)} is {value!r}; it must be {allowed}")


def check_settings(cfg: Any) -> list[str]:
    """Range-check a :class:`~text3d.config.GenerateConfig` (or any config with some of its fields).

    Returns:
        One line per setting that is legal but looks like a mistake (empty when none).

    Raises:
        ConfigError: the first setting out of range, as ``<key> is <value>; it must be <allowed range>``.
    """
    rules = dict(RULES)
    for stage in STAGES:
        rules.update({f"{stage}.{key}": check for key, check in STAGE_RULES.items()})
    rules.update({f"{stage}.sds.weighting": choice(*_sds_weightings()) for stage in STAGES})
    for path, check in rules.items():
        value = _get(cfg, path)
        if value is _MISSING:
            continue
        allowed = check(value)
        if allowed is not None:
            raise _fail(path, value, allowed)

    stages = [s for s in STAGES if _get(cfg, f"{s}.steps") is not _MISSING]
    if stages and all(_get(cfg, f"{s}.steps") == 0 for s in stages):
        names = " and ".join(f"{_label(s + '.steps')}" for s in stages)
        verb = "are both" if len(stages) == 2 else "are all" if len(stages) > 2 else "is"
        raise ConfigError(f"{names} {verb} 0; at least one stage needs steps > 0, or nothing is trained")
    for stage in STAGES:
        t_range, anneal = _get(cfg, f"{stage}.sds.t_range"), _get(cfg, f"{stage}.sds.t_anneal_to")
        if anneal not in (None, _MISSING) and t_range is not _MISSING:
            allowed = f"unset or a number in ({t_range[0]:g}, 1): above {stage}.sds.t_range's low end"
            if not _number(anneal) or not t_range[0] < anneal < 1:
                raise _fail(f"{stage}.sds.t_anneal_to", anneal, allowed)

    from text3d.guidance.stable_diffusion import check_model_config

    if _get(cfg, "model") is not _MISSING:
        check_model_config(cfg.model)

    notes = []
    too_strong: dict[float, list[str]] = {}  # one line for the value both stages got from --guidance-scale
    for stage in STAGES:
        scale = _get(cfg, f"{stage}.sds.guidance_scale")
        if _number(scale) and scale > WARN_GUIDANCE_SCALE:
            too_strong.setdefault(scale, []).append(f"{stage}.sds.guidance_scale")
    for scale, paths in too_strong.items():
        short = " (guidance-scale)" if len(paths) == len(STAGES) else ""
        notes.append(
            f"{' and '.join(paths)}{short} {'are' if len(paths) > 1 else 'is'} {scale:g}, far above the ~100 "
            "SDS uses: renders will oversaturate or turn to NaN (a typo?)"
        )
    for stage in STAGES:
        steps = _get(cfg, f"{stage}.steps")
        if _number(steps) and steps > WARN_STEPS:
            notes.append(f"{_label(stage + '.steps')} is {steps}; that run would take weeks (a typo?)")
    tets = _get(cfg, "refine.dmtet.resolution")
    if _number(tets) and tets > WARN_TET_RESOLUTION and _get(cfg, "refine.steps") != 0:
        notes.append(
            f"{_label('refine.dmtet.resolution')} is {tets}: over 100 million tets, many GB of memory "
            f"(the default is 128)"
        )
    return notes


def validate_settings(cfg: Any) -> list[str]:
    """:func:`check_settings`, also issuing each line it returns as a :class:`SuspiciousSettingWarning`."""
    notes = check_settings(cfg)
    for note in notes:
        warnings.warn(note, SuspiciousSettingWarning, stacklevel=2)
    return notes


def check_prompt(prompt: str, what: str = "prompt") -> None:
    """The prompt length limit of the web app (:data:`MAX_PROMPT_CHARS`), as one :class:`PromptError` line."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PromptError(
            f"the {what} is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS} (the text encoder reads "
            "77 tokens, a few hundred characters at most): shorten it"
        )
