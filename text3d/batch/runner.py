"""Batch mode: many prompts, one model load per process, resumable, failure-isolated, sharded with accelerate.

``run_batch`` is the library call behind ``text3d batch``; under ``accelerate launch`` every process runs it with
the same arguments:

1. Every process parses the same prompt files the same way, so all agree on the item list without talking.
2. Process ``r`` of ``n`` takes items ``r, r+n, r+2n, ...``: a partition, so no prompt is run twice or missed,
   and it does not depend on what is already on disk (which processes could see at different moments).
3. Items whose run folder says ``completed`` are skipped; the model is loaded only if something is left. The
   remaining prompts are encoded :data:`ENCODE_CHUNK` at a time, just before they run (so the first prompt starts
   at once and memory does not grow with the file); the text encoder is released once the last chunk is encoded.
   Each prompt runs through :func:`text3d.pipeline.generate` in its own folder, named after what defines its
   result (:func:`text3d.batch.promptfile.run_key`). A half-finished folder resumes from its checkpoint there.
   An exception (NaN, out of memory, a bad setting) fails that prompt only.
4. Results are gathered to every process (``gather_object``; no shared filesystem needed), and the main process
   writes ``summary.json``, ``summary.csv`` and ``index.html``.

Each run folder also gets ``batch.json``: the line it came from and one entry per attempt (batch invocation,
process index, host, start/finish, status, training steps run, the step each stage resumed from). That is how a
re-run, and a reader, know which process made a folder and which attempts trained it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import json
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from text3d.batch.promptfile import BatchItem, LineIssue, ParsedBatch, parse_prompt_files
from text3d.config import GenerateConfig
from text3d.errors import Cancelled, PromptFileError, PromptTruncatedWarning, Text3DError
from text3d.io import write_json
from text3d.pipeline import check_out_dir, generate, load_guidance, resolve_device, slugify
from text3d.training.trainer import Callback, Progress

OK_STATUSES = ("completed", "skipped")
"""Item statuses that count as success for the exit code."""

ENCODE_CHUNK = 16
"""Prompts encoded together just before they run. Their embeddings (six ``[77, D]`` tensors each, ~1 MB for
SD 2.1 in fp16) are dropped once the chunk has run, so memory is flat in the number of lines; a batch of at most
this many prompts encodes them all first and frees the text encoder before training, as a single run does."""

BARRIER_TIMEOUT = _dt.timedelta(days=7)
"""How long a process that finished its shard waits for the others at the final gather. Shards can differ by
hours (failures, resumes), and a dead peer is already handled by the launcher, which stops the others."""


@dataclass
class ItemResult:
    """What happened to one prompt in this batch invocation (one row of the summary)."""

    file: str
    line: int
    prompt: str
    key: str
    """Run folder name, relative to the batch's output folder."""
    status: str
    """``completed`` (trained to the end now), ``skipped`` (already completed before), ``failed``,
    ``cancelled``, ``not-run`` (the batch stopped before it); in a partial summary also ``running``/``pending``."""
    error: str | None = None
    process_index: int = 0
    """The process that handled the item in this invocation."""
    made_by: int | None = None
    """The process that completed the run folder (possibly in an earlier invocation), from ``batch.json``."""
    steps: int = 0
    """Training steps run in this invocation (0 for a skipped item; fewer than the total for a resumed one)."""
    seconds: float = 0.0
    thumbnail: str | None = None
    """``<key>/previews/latest.png`` when it exists, relative to the output folder."""
    outputs: dict[str, str] = field(default_factory=dict)
    """Files the run lists in ``run.json`` (video, meshes, ...), relative to the output folder."""

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES


@dataclass
class BatchResult:
    """The whole batch as the main process summarises it (every process returns the same)."""

    out_dir: Path
    items: list[ItemResult]
    errors: list[LineIssue]
    warnings: list[LineIssue]
    files: list[str]
    invocation: str
    num_processes: int = 1
    process_index: int = 0
    final: bool = True
    """False for the summaries written while the batch is still running."""

    @property
    def ok(self) -> bool:
        """Every line parsed and every prompt completed: the batch's exit code is 0 exactly when this holds."""
        return not self.errors and all(r.ok for r in self.items)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.items:
            out[r.status] = out.get(r.status, 0) + 1
        out["bad_lines"] = len(self.errors)
        return out


@dataclass(frozen=True)
class BatchProgress:
    """Where this process is in its share of the batch: sent when a prompt starts and when it ends."""

    done: int
    """Prompts of this process's share that are finished (skipped ones included)."""
    total: int
    """Prompts in this process's share."""
    eta_s: float | None
    """Time left for the share: the mean time of the prompts run so far times the prompts left to run (``None``
    until one has run)."""
    item: BatchItem
    """The prompt that starts (``result`` is ``None``) or has just ended."""
    result: ItemResult | None = None

    def text(self) -> str:
        """``3 / 20000, batch ETA 2 h 10 min`` (the 1-based number of the prompt that starts, or of the one that
        ended)."""
        n = self.done + (1 if self.result is None else 0)
        eta = (
            "batch ETA after the first prompt" if self.eta_s is None else f"batch ETA {_duration(self.eta_s)}"
        )
        return f"{n} / {self.total}, {eta}"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


# ---------------------------------------------------------------------------------------------------- run folders
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def run_status(run_dir: Path) -> str:
    """``run.json``'s status, or ``pending`` when the folder has none yet."""
    return str(_read_json(run_dir / "run.json").get("status", "pending"))


def _made_by(record: dict, status: str) -> int | None:
    """The process of the attempt that completed the run. A process killed between writing ``run.json``
    (completed) and its ``batch.json`` entry leaves that attempt ``running``: it still made the run."""
    attempts = record.get("attempts", [])
    done = [a for a in attempts if a.get("status") == "completed"]
    if not done and status == "completed" and attempts and attempts[-1].get("status") == "running":
        done = attempts[-1:]
    return int(done[-1]["process_index"]) if done else None


def _safe_relative(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    p = Path(value)
    return not p.is_absolute() and ".." not in p.parts


def _files_of(out_dir: Path, key: str) -> tuple[str | None, dict[str, str]]:
    """Thumbnail and run.json outputs of a run folder, as paths relative to the batch's output folder."""
    run_dir = out_dir / key
    thumb = f"{key}/previews/latest.png" if (run_dir / "previews" / "latest.png").is_file() else None
    outputs: dict[str, str] = {}
    for name, value in (_read_json(run_dir / "run.json").get("outputs") or {}).items():
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if _safe_relative(v):
                outputs[name if len(values) == 1 else f"{name}[{i}]"] = f"{key}/{Path(v).as_posix()}"
    return thumb, outputs


def scan_item(item: BatchItem, out_dir: Path, process_index: int = 0) -> ItemResult:
    """What the filesystem says about an item that this process has not handled (yet)."""
    status = run_status(out_dir / item.key)
    thumb, outputs = _files_of(out_dir, item.key)
    return ItemResult(
        item.file,
        item.line,
        item.prompt,
        item.key,
        status,
        process_index=process_index,
        made_by=_made_by(_read_json(out_dir / item.key / "batch.json"), status),
        thumbnail=thumb,
        outputs=outputs,
    )


class _AttemptLog:
    """``batch.json`` of one run folder: the source line and one entry per attempt, rewritten atomically."""

    def __init__(
        self, run_dir: Path, item: BatchItem, invocation: str, process_index: int, num_processes: int
    ):
        self.path = run_dir / "batch.json"
        previous = _read_json(self.path)
        self.data = {
            "file": item.file,
            "line": item.line,
            "text": item.text,
            "prompt": item.prompt,
            "key": item.key,
            "attempts": list(previous.get("attempts", [])),
        }
        self.attempt = {
            "invocation": invocation,
            "process_index": process_index,
            "num_processes": num_processes,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _now(),
            "finished": None,
            "status": "running",
            "steps": 0,
            "resumed_from": {},
            "error": None,
        }
        self.data["attempts"].append(self.attempt)
        write_json(self.path, self.data)

    def finish(self, status: str, steps: int, error: str | None, resumed_from: dict[str, int]) -> None:
        self.attempt.update(
            status=status, steps=steps, error=error, resumed_from=resumed_from, finished=_now()
        )
        write_json(self.path, self.data)


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="milliseconds")


def describe_failure(err: BaseException) -> str:
    """One line for the summary: the user-facing message, or the exception type and its first line."""
    if isinstance(err, Text3DError):
        return str(err)
    first = (str(err).strip().splitlines() or [""])[0][:300]
    if isinstance(err, torch.OutOfMemoryError):
        return (
            f"out of memory ({first}); lower coarse-res, use model.dtype=fp16, or run fewer processes per GPU"
        )
    return f"{type(err).__name__}: {first}"


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------- processes
def process_state():
    """accelerate's ``PartialState`` for this process (one process when not launched by accelerate/torchrun).

    ``cpu=True`` when ``accelerate launch --cpu`` asked for it or there is no CUDA: ``PartialState`` itself ignores
    ``ACCELERATE_USE_CPU``, and without ``cpu=True`` the processes that torchrun (``accelerate launch --multi_gpu``)
    starts on a machine without GPUs would each believe they are alone and all run every prompt. With it they
    form a gloo group and split the prompts. The timeout is :data:`BARRIER_TIMEOUT`.
    """
    from accelerate import PartialState

    flag = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=flag or not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)
    if flag and state.num_processes == 1 and os.environ.get("MASTER_ADDR"):
        # `accelerate launch --cpu --num_processes N` without MPI starts ONE process (accelerate's multi-CPU
        # mode is mpirun-based); it then runs the whole batch, which is correct but not parallel.
        warnings.warn(
            "accelerate started a single process: with --cpu it needs MPI (--mpirun_hostfile) for several; "
            "on a machine without GPUs use `accelerate launch --multi_gpu --num_processes N` (torchrun; this "
            "batch then uses CPU processes with gloo) or `torchrun --nproc_per_node N -m text3d batch ...`",
            stacklevel=2,
        )
    return state


def default_batch_out(out_dir: str | Path, files: Sequence[str | Path]) -> Path:
    """``<out_dir>/batch-<first file's stem>``: deterministic, so re-running the same command finds its runs."""
    return Path(out_dir) / f"batch-{slugify(Path(files[0]).stem, 40)}"


def _invocation_id(state) -> str:
    inv = [f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"]
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(inv, from_process=0)
    return inv[0]


# ---------------------------------------------------------------------------------------------------- the batch
def require_prompts(parsed: ParsedBatch, files: Sequence[str | Path]) -> None:
    """Files with no prompt line at all (only comments, or empty) are a user error, not an empty success."""
    if not parsed.items and not parsed.errors:
        names = ", ".join(str(f) for f in files)
        raise PromptFileError(f"no prompts in {names}; write one prompt per line (# starts a comment)")


def run_batch(
    files: Sequence[str | Path],
    base: GenerateConfig,
    out_dir: str | Path | None = None,
    *,
    guidance=None,
    callback: Callback | None = None,
    on_item: Callable[[ItemResult], None] | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
    state=None,
    release_text_encoder: bool = True,
    parsed: ParsedBatch | None = None,
) -> BatchResult:
    """Run every prompt of ``files`` (this process's share of them) into ``out_dir`` and summarise.

    Args:
        base: settings for every prompt (the CLI knobs); each line's overrides are applied on top.
        out_dir: the batch's output folder (default ``base.out_dir``); every file written is inside it.
        guidance: a loaded model to reuse; loaded once here (on this process's device) when ``None`` and some
            prompt is left to run. Its text encoder is released after the last prompt is encoded only if loaded
            here.
        callback: per-step progress hook passed to :func:`generate`; raising ``Cancelled`` stops the batch
            (the current prompt keeps a resumable checkpoint, the rest become ``not-run``).
        on_item: called with each :class:`ItemResult` this process finishes (the CLI prints them).
        on_progress: called with a :class:`BatchProgress` when a prompt starts and when one ends (``n / N`` and
            the batch's ETA).
        state: an accelerate ``PartialState``-like object (``process_index``, ``num_processes``, ``device``,
            ``is_main_process``, ``wait_for_everyone``); :func:`process_state` when ``None``.
        parsed: ``files`` already parsed against ``base`` (the CLI parses first to report bad lines early).

    Returns:
        The merged result (the same on every process); ``result.ok`` decides the exit code.

    Raises:
        PromptFileError: a file is missing/unreadable, or the files hold no prompt lines at all.
        ModelLoadError: the model can't be loaded (nothing can run).
        RunDirError: ``out_dir`` is a file, under a file, or not writable (nothing was loaded).
    """
    parsed = parsed if parsed is not None else parse_prompt_files(list(files), base)
    require_prompts(parsed, files)
    out = Path(out_dir if out_dir is not None else base.out_dir)
    check_out_dir(out)  # a file, under a file, not writable: one line before any model is loaded
    state = state if state is not None else process_state()
    rank, world = state.process_index, state.num_processes
    invocation = _invocation_id(state)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(state.device) if world > 1 else resolve_device(base.device)

    shard = parsed.items[rank::world]
    mine: dict[str, ItemResult] = {}
    ran_seconds: list[float] = []  # prompts run (not skipped) in this invocation, for the ETA

    def progress(item: BatchItem, result: ItemResult | None = None) -> None:
        if on_progress is None:
            return
        to_run = len(shard) - len(mine)  # the prompt that starts included
        eta = sum(ran_seconds) / len(ran_seconds) * to_run if ran_seconds else None
        on_progress(BatchProgress(len(mine), len(shard), eta, item, result))

    def finish(item: BatchItem, result: ItemResult, write: bool = True) -> None:
        mine[result.key] = result
        if result.status not in ("skipped", "not-run"):
            ran_seconds.append(result.seconds)
        if on_item is not None:
            on_item(result)
        progress(item, result)
        if write and state.is_main_process:  # skips and not-run change nothing on disk: the final summary
            _write_partial(parsed, out, mine, invocation, world, files)

    pending: list[BatchItem] = []
    for item in shard:
        if run_status(out / item.key) == "completed":
            res = scan_item(item, out, rank)
            res.status = "skipped"
            finish(item, res, write=False)
        else:
            pending.append(item)

    if pending:
        own = guidance is None
        if own:
            guidance = load_guidance(dataclasses.replace(base, device=str(device)), device)
        stopped = False
        for start in range(0, len(pending), ENCODE_CHUNK):
            chunk = pending[start : start + ENCODE_CHUNK]
            if stopped:
                for item in chunk:
                    finish(item, _result(item, "not-run", None, rank), write=False)
                continue
            runnable = []
            for item in chunk:  # encode this chunk while the text encoder is loaded
                try:
                    _report_truncation(guidance, item, parsed)
                    guidance.prepare_text(item.cfg.prompt, item.cfg.negative_prompt, warn=False)
                    runnable.append(item)
                except Exception as err:
                    finish(item, _result(item, "failed", describe_failure(err), rank))
            if own and release_text_encoder and start + ENCODE_CHUNK >= len(pending):
                guidance.release_text_encoder()  # the last chunk is encoded
            for item in runnable:
                if stopped:
                    finish(item, _result(item, "not-run", None, rank), write=False)
                    continue
                progress(item)
                result, stopped = _run_item(item, out, device, guidance, callback, invocation, rank, world)
                finish(item, result)
            if getattr(guidance, "text_encoder", None) is not None:
                guidance.clear_text_cache()  # this chunk has run; later prompts are encoded again if repeated

    results = [mine[item.key] for item in shard]
    if world > 1:
        from accelerate.utils import gather_object

        results = gather_object(results)
    by_key = {r.key: r for r in results}
    merged = [by_key[item.key] for item in parsed.items]
    batch = BatchResult(
        out, merged, parsed.errors, parsed.warnings, [str(f) for f in files], invocation, world, rank
    )
    if state.is_main_process:
        from text3d.batch.summary import write_summary

        write_summary(batch)
    state.wait_for_everyone()
    return batch


def _result(item: BatchItem, status: str, error: str | None, rank: int) -> ItemResult:
    return ItemResult(item.file, item.line, item.prompt, item.key, status, error, rank)


def _report_truncation(guidance, item: BatchItem, parsed: ParsedBatch) -> None:
    """Warn, as ``file:line: ...``, for a prompt the text encoder will cut off; the summary lists it too."""
    notes = getattr(guidance, "truncation_notes", None)
    for note in notes(item.cfg.prompt, item.cfg.negative_prompt) if notes is not None else []:
        issue = LineIssue(item.file, item.line, note)
        parsed.warnings.append(issue)
        warnings.warn(str(issue), PromptTruncatedWarning, stacklevel=3)


def _run_item(
    item: BatchItem,
    out: Path,
    device: torch.device,
    guidance,
    callback: Callback | None,
    invocation: str,
    rank: int,
    world: int,
) -> tuple[ItemResult, bool]:
    """Generate one prompt in its folder; returns its result and whether the batch must stop (cancelled)."""
    run_dir = out / item.key
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(item.cfg, out_dir=str(out), device=str(device))
    log = _AttemptLog(run_dir, item, invocation, rank, world)
    steps = 0
    resumed_from: dict[str, int] = {}  # per stage: the step its first trained step started from

    def counting(progress: Progress) -> None:
        nonlocal steps
        if not progress.message:  # a trained step (messages report the turntable and export phases)
            steps += 1
            resumed_from.setdefault(progress.stage, progress.step - 1)
        if callback is not None:
            callback(progress)

    t0 = time.perf_counter()
    status, error, stop = "completed", None, False
    try:
        generate(cfg, guidance=guidance, callback=counting, run_dir=run_dir)
    except Cancelled:
        status, stop = "cancelled", True
    except Exception as err:  # one prompt's failure (NaN, OOM, bad setting) must not end the batch
        status, error = "failed", describe_failure(err)
        _free_memory(device)
    except BaseException:  # KeyboardInterrupt, SystemExit: record the attempt, then stop everything
        log.finish("interrupted", steps, None, resumed_from)
        raise
    log.finish(status, steps, error, resumed_from)
    thumb, outputs = _files_of(out, item.key)
    result = ItemResult(
        item.file,
        item.line,
        item.prompt,
        item.key,
        status,
        error,
        rank,
        rank if status == "completed" else _made_by(log.data, status),
        steps,
        round(time.perf_counter() - t0, 3),
        thumb,
        outputs,
    )
    return result, stop


def _write_partial(
    parsed, out: Path, mine: dict[str, ItemResult], invocation: str, world: int, files
) -> None:
    """The main process's running summary: its own results, and the filesystem's view of everyone else's."""
    from text3d.batch.summary import write_summary

    items = [mine.get(item.key) or scan_item(item, out, i % world) for i, item in enumerate(parsed.items)]
    write_summary(
        BatchResult(
            out,
            items,
            parsed.errors,
            parsed.warnings,
            [str(f) for f in files],
            invocation,
            world,
            final=False,
        )
    )
