"""Prompt files for batch mode: parsing, per-line overrides, and the deterministic run folder of each line.

Text form (any suffix but ``.jsonl``), one prompt per line::

    # animals — blank lines and lines starting with # are ignored
    a red fox sitting on a mossy rock
    a ceramic owl mug | seed=3 coarse-steps=5000
    a blue vase | negative="blurry, low quality" coarse.sds.guidance_scale=50

JSONL form (``.jsonl``), one object per line; every key but ``prompt`` is an override::

    {"prompt": "a red fox", "seed": 3, "coarse-steps": 5000}

Override keys are the :data:`text3d.config.ALIASES` short names (the CLI flag names) or dotted config paths.
Settings that must be the same for the whole batch (``model``, ``device``, ``out_dir``) can't change per line,
because the batch loads one model per process and owns the output folder.

A line's run folder is named after what defines its result (:func:`run_key`: the prompt, negative prompt, seed and
every setting that changes the result), never after its file or line number: adding a comment, reordering lines
or renaming the file finds the same folders, and two lines that define the same result run once (the later one is
reported as a duplicate).

A bad line (undecodable bytes, a line over :data:`MAX_LINE_CHARS`, an unknown key, a bad value or one out of the
range :func:`text3d.validation.check_settings` allows, an empty prompt, control characters) never stops the batch:
it becomes a :class:`LineIssue` with its file and line number. UTF-16 files with a byte-order mark are read as
text; without one they are refused with one line (:func:`as_utf8`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text3d.config import ALIASES, GenerateConfig, apply_overrides, to_dict
from text3d.errors import ConfigError, PromptFileError
from text3d.pipeline import slugify
from text3d.validation import check_settings

MAX_LINE_CHARS = 1000
"""Longest accepted line, overrides included. CLIP reads 77 tokens (a few hundred characters at most), so a
longer line is a pasting accident, not a prompt."""

OVERRIDE_SEPARATOR = " | "
"""Between a prompt and its overrides: a ``|`` with white space (or the line's start/end) on both sides. The
first one splits, so a prompt itself can't contain one (``a|b`` is fine)."""

BATCH_WIDE = ("model", "device", "out_dir", "prompt")
"""Top-level config fields a line may not override (see the module docstring)."""

_SEPARATOR = re.compile(r"(?:^|\s)\|(?:\s|$)")
_PATH_LIKE = re.compile(r"^(~|\.{1,2}[/\\]|[/\\]|[A-Za-z]:[/\\])|[/\\]\.\.([/\\]|$)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class LineIssue:
    """A problem on one line of a prompt file, reported as ``file:line: message``."""

    file: str
    line: int
    """1-based, as editors count."""
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class BatchItem:
    """One prompt of a batch with its resolved config and the name of its run folder.

    Attributes:
        file: the prompt file as given on the command line.
        line: 1-based line number in that file.
        text: the line as decoded (prompt plus overrides); part of the run folder's hash.
        overrides: the per-line overrides as written (already validated into ``cfg``).
        cfg: the batch-wide config with ``prompt`` and the overrides applied (``out_dir``/``device`` are set
            by the runner).
        key: the run folder's name, :func:`run_key` of ``cfg``: the same prompt and settings give the same
            folder on every run, process and machine, whatever the line or file, which is how a re-run finds
            its finished and half-finished prompts. Only ``[a-z0-9-]``, so no prompt can escape ``--out``.
    """

    file: str
    line: int
    text: str
    prompt: str
    overrides: dict[str, Any]
    cfg: GenerateConfig
    key: str
    notes: tuple[str, ...] = ()
    """Settings of this line that are legal but look like mistakes (:func:`text3d.validation.check_settings`)."""


@dataclass
class ParsedBatch:
    """Every usable line of the prompt files in order, and every bad one."""

    items: list[BatchItem] = field(default_factory=list)
    errors: list[LineIssue] = field(default_factory=list)
    """Lines that were not run; any of them makes the batch's exit code non-zero."""
    warnings: list[LineIssue] = field(default_factory=list)
    """Lines that run but look like mistakes (a prompt that looks like a file path), and duplicates."""
    duplicates: list[LineIssue] = field(default_factory=list)
    """Lines with the same prompt and settings as an earlier line: they run once (also in ``warnings``)."""


NOT_RESULT = frozenset(
    {
        "prompt",
        "negative_prompt",
        "seed",
        "out_dir",
        "device",
        "trainer.progress_bar",
        "trainer.log_every",
        "trainer.preview_every",
        "trainer.preview_every_s",
        "trainer.preview_views",
        "trainer.preview_res",
        "trainer.checkpoint_every",
        "trainer.keep_optimizer_state",
    }
)
"""Settings left out of a run's identity: the prompt, negative prompt and seed enter it on their own, and the
rest say where a run goes or how often it reports and checkpoints, which changes no trained value (resume is
exact)."""

SLUG_CHARS = 40
"""Longest prompt part of a run folder name; it ends at a word boundary."""


def _flat(data, prefix: str = "") -> dict:
    """``{"coarse": {"steps": 5}}`` to ``{"coarse.steps": 5}``."""
    if not isinstance(data, dict):
        return {prefix[:-1]: data}
    out = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


@functools.cache
def _defaults() -> dict:
    return _flat(to_dict(GenerateConfig()))


@functools.lru_cache(maxsize=4096)
def _settings_digest(settings: GenerateConfig) -> str:
    """Hash of the settings that differ from the defaults (cached: lines of a file mostly share theirs).

    Only differences are hashed, so a setting added to text3d later (with its default) leaves every existing
    run folder's name as it was."""
    defaults = _defaults()
    changed = {
        k: v
        for k, v in _flat(to_dict(settings)).items()
        if k not in NOT_RESULT and (k not in defaults or defaults[k] != v)
    }
    return json.dumps(changed, sort_keys=True, default=str)


def _without_identity(cfg: GenerateConfig) -> GenerateConfig:
    return dataclasses.replace(cfg, prompt="", negative_prompt="", seed=0)


def slug_words(prompt: str, max_len: int = SLUG_CHARS) -> str:
    """:func:`text3d.pipeline.slugify`, cut at the last word boundary that fits (a single long word is cut)."""
    slug = slugify(prompt, 10 * max_len)
    if len(slug) <= max_len:
        return slug
    head = slug[: max_len + 1]
    cut = head.rfind("-")
    return slug[:cut] if cut > 0 else slug[:max_len]


def run_key(cfg: GenerateConfig) -> str:
    """The run folder name of a prompt: ``<prompt slug>-<hash>``, where the hash covers what defines the result.

    That is the prompt, the negative prompt, the seed and every setting that differs from the defaults except
    :data:`NOT_RESULT`; not the file, its name or the line number. The slug is cut at a word boundary.
    """
    identity = json.dumps(
        [cfg.prompt, cfg.negative_prompt, cfg.seed, _settings_digest(_without_identity(cfg))],
        ensure_ascii=False,
    )
    digest = hashlib.sha1(identity.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug_words(cfg.prompt)}-{digest}"


@functools.lru_cache(maxsize=4096)
def _checked(settings: GenerateConfig) -> tuple[str, ...]:
    """:func:`check_settings` of a config whose prompt, negative prompt and seed are blank (they are not range
    checked), cached: a 20,000-line file with a handful of distinct settings is checked a handful of times."""
    return tuple(check_settings(settings))


def parse_overrides(spec: str) -> dict[str, str]:
    """``seed=3 negative="blurry, dark"`` to ``{"seed": "3", "negative": "blurry, dark"}`` (shell quoting)."""
    try:
        tokens = shlex.split(spec)
    except ValueError as err:
        raise ConfigError(f"cannot read the overrides after ' | ': {err}") from None
    out: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value after ' | ', got {token!r}")
        out[key.strip()] = value
    return out


def _check_key(key: str) -> None:
    """Reject batch-wide settings and unknown top-level names with a message that lists what is valid."""
    top_fields = {f.name for f in dataclasses.fields(GenerateConfig)}
    for path in ALIASES.get(key, (key,)):
        head = path.split(".", 1)[0]
        if head in BATCH_WIDE:
            flag = "--model" if head == "model" else f"--{head.replace('_', '-')}"
            raise ConfigError(
                f"{key!r} can't change per line: one batch uses one {head} for every prompt; "
                f"pass {flag} to the batch instead"
            )
        if head not in top_fields:
            shorts = ", ".join(k for k in ALIASES if ALIASES[k][0].split(".", 1)[0] not in BATCH_WIDE)
            raise ConfigError(
                f"unknown key {key!r}; use a short name ({shorts}) or a dotted config path such as "
                "coarse.sds.guidance_scale"
            )


def make_item(
    file: str, line: int, text: str, prompt: str, overrides: dict[str, Any], base: GenerateConfig
) -> BatchItem:
    """Validate one line's prompt and overrides against ``base``.

    Raises:
        ConfigError: the one-line reason the line is bad, including a setting out of the range
            :func:`text3d.validation.check_settings` allows (the caller adds file and line).
    """
    prompt = prompt.strip()
    if not prompt:
        raise ConfigError("empty prompt; write what to make before any ' | ' overrides")
    if _CONTROL.search(prompt):
        raise ConfigError("the prompt contains control characters")
    for text in (prompt, *(v for v in overrides.values() if isinstance(v, str))):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError("the line holds an unpaired surrogate escape (\\udXXX), not text") from None
    for key, value in overrides.items():
        _check_key(key)
        if isinstance(value, (dict, list)):
            raise ConfigError(
                f"{key!r}: give one value per key (dotted keys for nested settings), not {value!r}"
            )
    cfg = apply_overrides(dataclasses.replace(base, prompt=prompt), overrides)
    # the ranges generate() checks, so a bad line fails here, before anything runs
    notes = _checked(_without_identity(cfg))
    return BatchItem(file, line, text, prompt, dict(overrides), cfg, run_key(cfg), notes)


def _parse_line(text: str, jsonl: bool) -> tuple[str, dict[str, Any]]:
    if not jsonl:
        prompt, *rest = _SEPARATOR.split(text, maxsplit=1)
        return prompt, parse_overrides(rest[0] if rest else "")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"not valid JSON: {err.msg} (column {err.colno})") from None
    if not isinstance(obj, dict):
        raise ConfigError('each JSONL line must be an object like {"prompt": "a red fox", "seed": 3}')
    prompt = obj.pop("prompt", None)
    if not isinstance(prompt, str):
        raise ConfigError('missing "prompt" (a string) in this JSON object')
    return prompt, obj


def as_utf8(data: bytes, name: str) -> bytes:
    """The bytes of a prompt file as UTF-8 without a byte-order mark.

    Windows editors (Notepad's "Unicode", PowerShell's ``>``) save UTF-16 with a byte-order mark: such a file is
    decoded whole and re-encoded, so it reads like its UTF-8 twin. UTF-16 without a mark (NUL bytes between the
    letters) or UTF-32 is refused with one line, rather than reported as a bad line for each of its lines.

    Raises:
        PromptFileError: the file is UTF-32, UTF-16 without a byte-order mark, or broken UTF-16.
    """
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise PromptFileError(f"prompt file {name} is UTF-32: save it as UTF-8")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            raise PromptFileError(
                f"prompt file {name} is UTF-16 but cut or damaged: save it as UTF-8"
            ) from None
    head = data[:4096]
    nul_pairs = max(head[0::2].count(0), head[1::2].count(0))  # ASCII in UTF-16: a NUL in every other byte
    if len(head) >= 4 and nul_pairs * 5 >= len(head) * 2:
        raise PromptFileError(f"prompt file {name} is UTF-16: save it as UTF-8")
    return data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark from Windows editors


def parse_prompt_file(path: str | Path, base: GenerateConfig | None = None) -> ParsedBatch:
    """Parse one prompt file (``.jsonl`` by suffix, otherwise the text form) against the batch config ``base``.

    Raises:
        PromptFileError: the file is missing or unreadable (a bad line is a :class:`LineIssue` instead).
    """
    base = base or GenerateConfig()
    name = str(path)
    p = Path(path)
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "does not exist"
        raise PromptFileError(f"prompt file {name} {what}; pass a text file with one prompt per line")
    try:
        data = p.read_bytes()
    except OSError as err:
        raise PromptFileError(f"cannot read prompt file {name}: {err.strerror}") from None
    data = as_utf8(data, name)
    jsonl = p.suffix.lower() == ".jsonl"
    out = ParsedBatch()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            out.errors.append(
                LineIssue(name, number, f"not valid UTF-8 (byte {err.start + 1}); save the file as UTF-8")
            )
            continue
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(text) > MAX_LINE_CHARS:
            out.errors.append(
                LineIssue(name, number, f"line is {len(text)} characters; the limit is {MAX_LINE_CHARS}")
            )
            continue
        try:
            prompt, overrides = _parse_line(stripped, jsonl)
            item = make_item(name, number, stripped, prompt, overrides, base)
        except ConfigError as err:
            out.errors.append(LineIssue(name, number, str(err)))
            continue
        out.warnings += [LineIssue(name, number, note) for note in item.notes]
        if _PATH_LIKE.search(item.prompt):
            out.warnings.append(
                LineIssue(
                    name,
                    number,
                    f"prompt {item.prompt[:60]!r} looks like a file path; it is used as text, in run folder "
                    f"{item.key} inside the output folder",
                )
            )
        out.items.append(item)
    return out


def parse_prompt_files(paths: list[str | Path], base: GenerateConfig | None = None) -> ParsedBatch:
    """Parse several files in order; lines with the same prompt and settings (:func:`run_key`), in one file or
    across files, run once: the later ones are reported as duplicates."""
    merged = ParsedBatch()
    seen: dict[str, BatchItem] = {}
    for path in paths:
        parsed = parse_prompt_file(path, base)
        merged.errors += parsed.errors
        merged.warnings += parsed.warnings
        for item in parsed.items:
            if item.key in seen:
                first = seen[item.key]
                issue = LineIssue(
                    item.file,
                    item.line,
                    f"duplicate of {first.file}:{first.line} (same prompt and settings); it runs once",
                )
                merged.warnings.append(issue)
                merged.duplicates.append(issue)
                continue
            seen[item.key] = item
            merged.items.append(item)
    return merged
