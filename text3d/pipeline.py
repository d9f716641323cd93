"""The one library call behind the CLI, the web app and batch mode: :func:`generate` (and :func:`resume`).

A run folder is self-describing::

    <out>/<slug>-<YYYYmmdd-HHMMSS>-<hex>/
        config.yaml          the resolved GenerateConfig (what made this run)
        run.json             status (running | completed | cancelled | failed), versions, stage progress, outputs
        metrics.jsonl        losses every log_every steps
        checkpoints/         <stage>.safetensors (parameters, Adam state, RNG state, step)
        previews/            <stage>-<step>.png and latest.png
        video/               <stage>-turntable.mp4 (or .gif)
        mesh/                <run folder name>.glb, .obj + .mtl + _albedo.png, .ply (see text3d.export)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from text3d.config import GenerateConfig, load_config, save_config
from text3d.errors import Cancelled, ConfigError, ExportError, PromptError, RunDirError
from text3d.export.exporter import ExportConfig, ExportResult, export_asset, validate_config
from text3d.export.mesh import Placement
from text3d.export.video import turntable_frames, write_video
from text3d.guidance.prompts import TextEmbeddings
from text3d.guidance.stable_diffusion import StableDiffusionGuidance, check_model_config, resolve_dtype
from text3d.io import remove_stale_temporaries, write_json
from text3d.recipes import text_to_3d
from text3d.training.checkpoint import (
    checkpoint_path,
    is_pruned,
    load_weights,
    prune_checkpoint,
    read_checkpoint_meta,
)
from text3d.training.previews import auto_size
from text3d.training.stage import Stage
from text3d.training.trainer import Callback, Progress, Trainer, TrainerConfig
from text3d.validation import validate_settings

_SLUG_MAX = 48
MESH_DIR = "mesh"

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    status: str
    video: Path | None = None
    meshes: list[Path] = field(default_factory=list)


def slugify(prompt: str, max_len: int = _SLUG_MAX) -> str:
    """A filesystem-safe name from a prompt: lowercase ASCII letters, digits and single hyphens only.

    Whatever the prompt (``../../x``, ``/etc/passwd``, emoji), the result can never leave its parent folder.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    slug = slug[:max_len].rstrip("-")
    return slug or "untitled"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist.

    Raises:
        ConfigError: the device string is malformed or names hardware this torch build cannot use.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"device {name!r} is not a torch device; use auto, cpu, cuda, cuda:1 or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                "use --device cpu, or install a CUDA build of torch"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ConfigError(f"device {name!r} asked for, but MPS is not available here; use --device cpu")
    return device


def check_out_dir(out_dir: str | Path) -> None:
    """Fail in one line, before any model is loaded, when no run folder can be made under ``out_dir``.

    Catches an output folder that is a file, one under a file, and one where this user cannot create files (a
    read-only folder or mount). Creates nothing.

    Raises:
        RunDirError: naming ``out_dir`` and what is wrong with it.
    """
    out = Path(out_dir)
    existing = out
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == out else f" is under {existing}, which"
        raise RunDirError(f"the output folder {out}{where} is a file, not a folder; pass a folder with --out")
    try:  # an unnamed file where the run folder would go: works for root too, and on read-only mounts
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise RunDirError(
            f"cannot write in the output folder {out} ({existing}: {err.strerror}); pass one you can write to "
            "with --out"
        ) from None


def new_run_dir(out_dir: str | Path, prompt: str) -> Path:
    """Create ``<out_dir>/<slug>-<timestamp>-<random hex>`` (never reused, never outside ``out_dir``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    while True:
        path = out / f"{slugify(prompt)}-{stamp}-{os.urandom(3).hex()}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def load_guidance(cfg: GenerateConfig, device: torch.device | None = None) -> StableDiffusionGuidance:
    """Load the diffusion model a config names (the only place a run touches the hub)."""
    device = device or resolve_device(cfg.device)
    model = cfg.model
    check_model_config(model)
    guidance = StableDiffusionGuidance.from_pretrained(
        model.model_id,
        device=device,
        dtype=resolve_dtype(model.dtype, device),
        local_files_only=model.local_files_only,
        encoder_id=model.taesd_id if model.encoder == "taesd" else None,
    )
    return guidance.optimize(channels_last=model.channels_last, compile_mode=model.compile)


class RunRecord:
    """``run.json``: rewritten atomically whenever something about the run changes."""

    def __init__(self, run_dir: Path, fields: dict, device: torch.device):
        """``fields``: what defines the run (prompt, negative prompt, seed, model; or the data of a fit)."""
        import diffusers

        import text3d

        self.path = run_dir / "run.json"
        previous = {}
        if self.path.exists():
            previous = json.loads(self.path.read_text(encoding="utf-8"))
        self.data = {
            **fields,
            "status": "running",
            "created": previous.get("created", _dt.datetime.now().isoformat(timespec="seconds")),
            "updated": None,
            "device": str(device),
            "versions": {
                "text3d": text3d.__version__,
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "python": platform.python_version(),
            },
            "stages": previous.get("stages", {}),
            "outputs": previous.get("outputs", {}),
            "error": None,
        }

    def update(self, **kwargs) -> None:
        self.data.update(kwargs)
        self.data["updated"] = _dt.datetime.now().isoformat(timespec="seconds")
        write_json(self.path, self.data)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of a run, then the caller's setting back.

    On CPU, multi-threaded scatter-adds (the hash-grid backward) sum in a varying order, so two runs of the same
    seed drift apart in the last bits; with deterministic kernels they, and a resumed run, are bit-identical.
    """
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(enabled or before, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


def build_stages(
    cfg: GenerateConfig, guidance: StableDiffusionGuidance | None = None, text: TextEmbeddings | None = None
) -> list[Stage]:
    """The text-to-3D stages ``cfg`` asks for (:func:`text3d.recipes.text_to_3d.build_stages`)."""
    return text_to_3d.build_stages(cfg.coarse, cfg.refine, guidance, text)


def generate(
    cfg: GenerateConfig,
    guidance: StableDiffusionGuidance | None = None,
    callback: Callback | None = None,
    run_dir: str | Path | None = None,
) -> RunResult:
    """Run text-to-3D for ``cfg.prompt`` in a new run folder under ``cfg.out_dir`` (or in ``run_dir``).

    Args:
        guidance: a loaded model to reuse (batch mode and the web app load it once); loaded from ``cfg.model``
            and its text encoder released after encoding when ``None``.
        callback: per-step progress hook; raise :class:`text3d.errors.Cancelled` in it to stop cleanly.
        run_dir: an existing folder to run in (used by :func:`resume` and batch mode).

    Raises:
        PromptError, ModelLoadError, ConfigError: one-line user errors.
        Cancelled: when the callback cancelled; the run folder is consistent and resumable.
    """
    if not cfg.prompt.strip():
        raise PromptError(
            'the prompt is empty; describe the object, e.g. text3d generate "a ceramic owl mug"'
        )
    # before anything is loaded or a folder is made: the kinds, then every range (one line naming the setting)
    text_to_3d.check_kinds(cfg.coarse, cfg.refine)
    validate_settings(cfg)
    if run_dir is None:
        check_out_dir(cfg.out_dir)
    device = resolve_device(cfg.device)
    own_guidance = guidance is None
    if own_guidance:
        guidance = load_guidance(cfg, device)
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg.out_dir, cfg.prompt)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)  # what a killed run (mid-export, mid-checkpoint) left half-written
    save_config(cfg, run_dir / "config.yaml")
    record = RunRecord(run_dir, _prompt_fields(cfg), device)
    record.update(status="running")
    text = guidance.prepare_text(cfg.prompt, cfg.negative_prompt)
    if own_guidance:
        guidance.release_text_encoder()
    result = RunResult(run_dir=run_dir, status="running")
    with deterministic_algorithms(device.type == "cpu" or cfg.deterministic):
        _run_stages(cfg, device, guidance, text, run_dir, record, result, callback)
    result.status = "completed"
    record.update(status="completed")
    return result


def _prompt_fields(cfg: GenerateConfig) -> dict:
    return {
        "prompt": cfg.prompt,
        "negative_prompt": cfg.negative_prompt,
        "seed": cfg.seed,
        "model": cfg.model.model_id,
    }


def _run_stages(cfg, device, guidance, text, run_dir, record, result, callback) -> None:
    try:
        # stage construction draws initial weights: make it a function of the seed
        torch.manual_seed(cfg.seed)
        stages = build_stages(cfg, guidance, text)
        last, finishing = train_stages(
            stages, text_to_3d.start_from, cfg.seed, cfg.trainer, device, run_dir, record, result, callback
        )
        if last is not None and cfg.export.enabled:

            def on_phase(phase: str) -> None:
                finishing(f"exporting the mesh: {phase}")

            _export_after_training(last, cfg.export, run_dir, record, result, on_phase)
    except Cancelled:
        record.update(status="cancelled")
        raise
    except BaseException as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise


def train_stages(
    stages: list[Stage],
    start_from: Callable[[Stage, Stage | None], None],
    seed: int,
    trainer_cfg: TrainerConfig,
    device: torch.device,
    run_dir: Path,
    record: RunRecord,
    result: RunResult,
    callback: Callback | None,
) -> tuple[Stage | None, Callable[[str], None]]:
    """Train each stage in turn in ``run_dir`` (resuming from its checkpoint), then render its turntable video.

    Stage ``i`` starts from the seed ``seed + i`` and from stage ``i - 1`` (``start_from``), so a run and its
    resumption draw the same numbers. Returns the last stage and a reporter for what follows training (export
    phases), which the callback sees as messages and may cancel.

    Once stage ``i`` has finished, stage ``i - 1``'s checkpoint is pruned to its step (unless
    ``trainer.keep_earlier_stages``): stage ``i`` started from it and its own checkpoint holds all its state, so
    it is restored from that alone. A stage that had finished before this call keeps its turntable video.
    """
    previous: Stage | None = None
    previous_pruned = False
    finishing: Callable[[str], None] = lambda message: None  # noqa: E731
    for index, stage in enumerate(stages):
        torch.manual_seed(seed + index)
        ckpt = checkpoint_path(run_dir, stage.name)
        if previous_pruned and not ckpt.is_file():
            raise RunDirError(
                f"{run_dir}: stage {previous.name!r} kept only its step (its weights live on in "
                f"checkpoints/{stage.name}.safetensors), but that checkpoint is missing"
            )
        if not previous_pruned:  # a pruned stage's successor is restored whole from its own checkpoint
            start_from(stage, previous)
        stage.to(device)
        trainer = Trainer(stage, run_dir, trainer_cfg, callback)
        trainer.resume()
        finished_before = trainer.step >= stage.steps
        t_stage = time.perf_counter()
        trainer.run()
        record.data["stages"][stage.name] = {"step": trainer.step, "total": stage.steps}
        record.update()
        if previous is not None and trainer.step >= stage.steps and not trainer_cfg.keep_earlier_stages:
            prune_checkpoint(checkpoint_path(run_dir, previous.name))
        finishing = _finishing_reporter(callback, stage.name, trainer.step, stage.steps, t_stage)
        pruned = is_pruned(ckpt)
        videos = sorted((run_dir / "video").glob(f"{stage.name}-turntable.*"))
        if (finished_before and videos) or pruned:
            result.video = videos[0] if videos else result.video  # already made (or nothing left to make it)
        else:
            frames = turntable_frames(
                stage.representation,
                stage.shader,
                stage.views.preview_cameras(auto_size(trainer_cfg.video_frames, 60, 24, device), device),
                auto_size(trainer_cfg.video_res, 256, stage.views.resolution, device),
                on_frame=lambda i, n, report=finishing: report(
                    f"rendering the turntable, frame {i + 1} / {n}"
                ),
            )
            result.video = write_video(
                frames, run_dir / "video" / f"{stage.name}-turntable.mp4", trainer_cfg.video_fps
            )
        if result.video is not None:
            record.data["outputs"]["video"] = str(result.video.relative_to(run_dir))
        record.update()
        previous, previous_pruned = stage, pruned
    return previous, finishing


def _finishing_reporter(callback: Callback | None, stage: str, step: int, total: int, t_stage: float):
    """``report(message)``: tells the callback what the run does after a stage's last step (turntable frames, export
    phases), so a progress display stays live and a cancel raised by the callback stops the video or the export
    too. A cancelled export leaves no mesh file; the video is written only once all its frames exist."""

    def report(message: str) -> None:
        if callback is not None:
            elapsed = time.perf_counter() - t_stage
            callback(Progress(stage, step, total, None, elapsed, None, message=message))

    return report


def _export_after_training(
    stage: Stage,
    cfg: ExportConfig,
    run_dir: Path,
    record: RunRecord,
    result: RunResult,
    on_phase: Callable[[str], None] | None = None,
) -> None:
    """Export the final stage into ``<run>/mesh/``. An :class:`ExportError` (e.g. nothing visible to export) does
    not fail a run whose training completed: it is logged and kept in ``run.json``, and ``text3d export`` can be
    run again with other settings."""
    try:
        extras = _asset_extras(record.data)
        exported = export_trained(
            stage, run_dir / MESH_DIR, run_dir.name, cfg, extras=extras, on_phase=on_phase
        )
    except ExportError as err:
        log.warning("mesh export failed: %s (retry with: text3d export %s --threshold ...)", err, run_dir)
        record.update(export={"error": str(err)})
        return
    result.meshes = _mesh_files(exported.files)
    record.data["outputs"]["meshes"] = [str(p.relative_to(run_dir)) for p in result.meshes]
    record.update(export=_export_summary(exported))


def _asset_extras(run: dict) -> dict:
    return {k: run.get(k) for k in ("prompt", "negative_prompt", "seed", "model")}


def _mesh_files(files: list[Path]) -> list[Path]:
    """The files a user opens (GLB, OBJ, PLY), without the OBJ's companions."""
    return [p for p in files if p.suffix.lower() in (".glb", ".obj", ".ply")]


def _export_summary(exported) -> dict:
    return {
        "error": None,
        "vertices": exported.n_vertices,
        "faces": exported.n_faces,
        "threshold": exported.threshold,
        "threshold_iou": exported.threshold_iou,
        "scale": exported.placement.scale,
        "offset": list(exported.placement.offset),
        "seconds": {k: round(v, 3) for k, v in exported.seconds.items()},
    }


def export_trained(
    stage: Stage,
    out_dir: Path,
    name: str,
    cfg: ExportConfig,
    extras: dict | None = None,
    on_phase: Callable[[str], None] | None = None,
    place: Placement | None = None,
) -> ExportResult:
    """Export a trained stage's asset; an implicit surface's level reproduces the silhouettes seen from the
    stage's own views (``export.threshold_views`` of them). ``place``: the map into the file's frame (default:
    centred and scaled by the export settings)."""
    device = next(stage.parameters()).device
    was_training = stage.training
    stage.eval()
    try:
        with torch.no_grad():
            asset = stage.shader.finish_asset(stage.representation.asset())
            cameras = stage.views.silhouette_cameras(cfg.threshold_views, device)
            return export_asset(asset, out_dir, name, cfg, cameras, device, extras, on_phase, place)
    finally:
        stage.train(was_training)


def load_trained_stage(run_dir: str | Path, device: str | torch.device | None = None) -> Stage:
    """The last stage of a run that has a checkpoint, with its trained weights, on ``device`` (default: the
    run's device setting). Earlier stages are rebuilt and loaded too, so a stage initialised from its predecessor
    (``init_from``) is constructed exactly as in training.

    Raises:
        RunDirError: not a run folder, or no stage has a checkpoint yet.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    device = resolve_device(cfg.device) if device is None else torch.device(device)
    torch.manual_seed(cfg.seed)
    stages = build_stages(cfg)
    trained: Stage | None = None
    previous: Stage | None = None
    previous_pruned = False
    for stage in stages:
        ckpt = checkpoint_path(run_dir, stage.name)
        if not ckpt.is_file():
            break
        if not previous_pruned:  # see train_stages: a pruned stage's successor holds all of its own state
            text_to_3d.start_from(stage, previous)
        load_weights(stage, ckpt)
        previous, previous_pruned = stage, is_pruned(ckpt)
        if not previous_pruned:
            trained = stage
    if trained is None:
        raise RunDirError(
            f"{run_dir} has no trained stage yet (no checkpoints/*.safetensors); nothing to export"
        )
    return trained.to(device).eval()


def export_run(
    run_dir: str | Path, cfg: ExportConfig | None = None, device: str | torch.device | None = None
) -> RunResult:
    """Export the meshes of a run folder into ``<run>/mesh/`` (what ``text3d export`` does).

    Args:
        cfg: export settings; default: the ``export`` section of the run's ``config.yaml``.
        device: where to evaluate the fields; default: the run's device setting.

    Returns:
        The run with ``meshes`` set (GLB / OBJ / PLY paths); ``run.json`` lists them under ``outputs.meshes``.

    Raises:
        RunDirError: not a run folder or nothing trained yet. ExportError: nothing to export (empty surface) or a
        bad setting; no files are left behind.
    """
    run_dir = Path(run_dir)
    run_cfg = load_run_config(run_dir)
    cfg = cfg or run_cfg.export
    validate_config(cfg)
    stage = load_trained_stage(run_dir, device)
    remove_stale_temporaries(run_dir / MESH_DIR)  # a killed export's half-written files
    run_json = run_dir / "run.json"
    try:
        run = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        run = {}
    extras = _asset_extras(run) if run else {"prompt": run_cfg.prompt, "seed": run_cfg.seed}
    exported = export_trained(stage, run_dir / MESH_DIR, run_dir.name, cfg, extras=extras)
    meshes = _mesh_files(exported.files)
    if run:
        outputs = run.setdefault("outputs", {})
        outputs["meshes"] = [str(p.relative_to(run_dir)) for p in meshes]
        run["export"] = _export_summary(exported)
        write_json(run_json, run)
    return RunResult(run_dir=run_dir, status=str(run.get("status", "completed")), meshes=meshes)


def load_run_config(run_dir: str | Path) -> GenerateConfig:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(
            f"{run_dir} is not a text3d run folder (no config.yaml); pass the folder a run created"
        )
    return load_config(run_dir / "config.yaml")


class RunFinished(RunDirError):
    """:func:`resume` of a run that has completed: there is nothing to continue."""


def resume(
    run_dir: str | Path,
    guidance: StableDiffusionGuidance | None = None,
    callback: Callback | None = None,
    **overrides,
) -> RunResult:
    """Continue a run from its checkpoints with the config saved in it (``overrides`` replace top-level fields,
    e.g. ``device``).

    Raises:
        RunFinished: the run has completed (nothing is loaded or rewritten; ``text3d export`` re-exports it and
            ``text3d refine`` trains its refine stage further).
    """
    try:
        status = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "completed":
        raise RunFinished(
            f"{run_dir} has finished: nothing to resume. Write its meshes again with: text3d export {run_dir}; "
            f"train its refine stage further with: text3d refine {run_dir} --refine-steps N"
        )
    cfg = load_run_config(run_dir)
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return generate(cfg, guidance=guidance, callback=callback, run_dir=run_dir)


def refine(
    run_dir: str | Path,
    steps: int | None = None,
    resolution: int | None = None,
    device: str | None = None,
    guidance: StableDiffusionGuidance | None = None,
    callback: Callback | None = None,
) -> RunResult:
    """Run (or continue) the fine stage in a run folder whose coarse stage has finished (``text3d refine``).

    Args:
        steps: fine-stage steps; default: the run's ``refine.steps``, or the stage default if the run had none.
        resolution: refine-stage render size; default: the run's.
        device: overrides the run's device setting.

    Raises:
        RunDirError: not a run folder, or its coarse stage has not finished (resume that first).
    """
    from text3d.config import apply_overrides
    from text3d.recipes.text_to_3d import RefineStageConfig

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    done = stage_progress(run_dir, "coarse")
    if cfg.coarse.steps <= 0 or done < cfg.coarse.steps:
        raise RunDirError(
            f"the coarse stage of {run_dir} has not finished ({done}/{cfg.coarse.steps} steps); "
            f"finish it first with: text3d generate --resume {run_dir}"
        )
    overrides = {
        "refine-steps": steps if steps is not None else cfg.refine.steps or RefineStageConfig().steps
    }
    if resolution is not None:
        overrides["refine-res"] = resolution
    if device is not None:
        overrides["device"] = device
    return generate(apply_overrides(cfg, overrides), guidance=guidance, callback=callback, run_dir=run_dir)


def stage_progress(run_dir: Path, stage_name: str) -> int:
    """Steps completed by a stage according to its checkpoint (0 if none)."""
    path = checkpoint_path(run_dir, stage_name)
    return read_checkpoint_meta(path)["step"] if path.exists() else 0
