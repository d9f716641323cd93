"""The training loop shared by every recipe: views -> shading -> render -> objective + regularisers -> Adam step.

It runs any :class:`text3d.training.stage.Stage` and knows nothing of what its parts are: a NeRF under SDS from
orbit cameras and a mesh under a photometric loss from photos go through the same lines. It checkpoints every
``checkpoint_every`` steps, at the end and on cancel (:mod:`text3d.training.checkpoint`), so a killed run resumes
bit-exactly on CPU.

The only host syncs on the training path happen every ``log_every`` steps (reading the loss for the progress bar).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from text3d.errors import Cancelled
from text3d.io import write_bytes, write_text
from text3d.profiling import SectionTimer, section
from text3d.training.checkpoint import checkpoint_path, device_of, load_checkpoint, save_checkpoint
from text3d.training.previews import auto_size, save_png, shaded_views
from text3d.training.stage import Stage


@dataclass(frozen=True)
class TrainerConfig:
    log_every: int = 10
    """Steps between reading losses on the host (progress bar, metrics.jsonl, callback loss)."""
    preview_every: int = 500
    preview_every_s: float = 0.0
    """Also write a preview once this many seconds have passed since the last one (0 = off). The web app sets it
    so its preview refreshes every few seconds whatever the device's speed; previews draw no random numbers, so a
    wall-clock trigger leaves the training trajectory (and exact resume) unchanged."""
    checkpoint_every: int = 1000
    keep_optimizer_state: bool = False
    """Keep Adam's state in a stage's last checkpoint. Off, that checkpoint holds the weights, RNG state and step
    only (a third of the size); a finished stage continued later (``text3d refine`` with more steps) then starts
    Adam's moments afresh. Checkpoints taken during a stage always keep it, so a killed run resumes exactly."""
    keep_earlier_stages: bool = False
    """Keep an earlier stage's weights once the stage after it has finished. Off, its checkpoint keeps only its
    step: the later stage started from it and holds everything export and ``text3d refine`` need."""
    preview_views: int = 4
    preview_res: int = 0
    """Pixels per preview view; 0 = auto: 128 on a GPU, the training resolution on CPU."""
    video_frames: int = 0
    """0 = auto: 60 on a GPU, 24 on CPU (rendering is ~100x slower there)."""
    video_fps: int = 20
    video_res: int = 0
    """0 = auto: 256 on a GPU, the training resolution on CPU."""
    progress_bar: bool = True


@dataclass
class Progress:
    """What a per-step callback sees. Raise :class:`text3d.errors.Cancelled` from the callback to stop the run."""

    stage: str
    step: int
    """Steps completed in this stage."""
    total: int
    loss: float | None
    """The most recent loss read on the host (every ``log_every`` steps)."""
    elapsed_s: float
    eta_s: float | None
    preview: Path | None = None
    """Set on the steps that wrote a new preview image."""
    message: str = ""
    """Set (and no step trained) while the pipeline renders a stage's turntable or exports the mesh."""


Callback = Callable[[Progress], None]


# ---------------------------------------------------------------------------------------------------- trainer
def schedule_lr(optimizer: torch.optim.Optimizer, step: int, steps: int) -> None:
    """Set the learning rate of step ``step`` of ``steps`` in every Adam group that names an ``lr_final``: a
    geometric decay from the group's first ``lr`` (kept as ``lr_start``) to ``lr_final`` at the last step, as BARF
    decays its pose step. A function of the step alone, so a resumed run takes the same steps."""
    t = min(step / max(steps - 1, 1), 1.0)
    for group in optimizer.param_groups:
        if "lr_final" in group:
            start = group.setdefault("lr_start", group["lr"])
            group["lr"] = start * (group["lr_final"] / start) ** t


class Trainer:
    """Runs one stage to completion (or to cancellation) inside a run folder.

    Args:
        stage: the parts being optimised (already on their device), with an objective.
        run_dir: the run folder; writes ``checkpoints/<stage>.safetensors``, ``previews/``, ``metrics.jsonl``.
        callback: called after every step with a :class:`Progress`; may raise :class:`Cancelled`.
    """

    def __init__(
        self,
        stage: Stage,
        run_dir: Path,
        cfg: TrainerConfig = TrainerConfig(),
        callback: Callback | None = None,
    ):
        if stage.objective is None:
            raise ValueError(f"stage {stage.name!r} has no objective to train")
        self.stage = stage
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.callback = callback
        self.device = device_of(stage)
        # fused: one kernel per step for all parameters, and the step count stays on the device (the default
        # for-each Adam reads it on the host every step).
        self.optimizer = torch.optim.Adam(
            stage.parameter_groups(), betas=stage.optim.betas, eps=stage.optim.eps, fused=True
        )
        self.step = 0
        self.ckpt_path = checkpoint_path(self.run_dir, stage.name)

    def resume(self) -> int:
        """Load this stage's checkpoint if there is one; returns the step to continue from."""
        if self.ckpt_path.exists():
            self.step = load_checkpoint(self.ckpt_path, self.stage, self.optimizer)
            self._drop_metrics_after(self.step)
        return self.step

    def _drop_metrics_after(self, step: int) -> None:
        """Forget metric lines this stage logged after its checkpoint: they will be logged again on the way."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill
                continue
            if rec.get("stage") != self.stage.name or rec.get("step", 0) <= step:
                kept.append(line)
        write_text(path, "".join(f"{line}\n" for line in kept))

    def checkpoint(self) -> Path:
        """Save the stage; its last checkpoint without Adam's state unless ``keep_optimizer_state``."""
        finished = self.step >= self.stage.steps and not self.cfg.keep_optimizer_state
        optimizer = None if finished else self.optimizer
        return save_checkpoint(self.ckpt_path, self.stage, optimizer, self.step, {"total": self.stage.steps})

    def preview(self) -> Path:
        res = auto_size(self.cfg.preview_res, 128, self.stage.views.resolution, self.device)
        img = shaded_views(self.stage, self.cfg.preview_views, res)
        path = self.run_dir / "previews" / f"{self.stage.name}-{self.step:06d}.png"
        save_png(path, img)
        write_bytes(self.run_dir / "previews" / "latest.png", path.read_bytes())
        return path

    def train_step(self, timer: SectionTimer | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """One optimisation step. ``timer`` (benchmarks only) times render / vae_encode / unet / backward /
        optimizer; without it nothing here synchronises with the device."""
        stage = self.stage
        with section(timer, "render"):
            stage.representation.before_step(self.step)
            views = stage.views.sample(self.step, self.device)
            shading = stage.shader.sample(self.step, views.cameras)
            out = stage.representation.render(
                views.cameras, views.height, views.width, stage.shader, shading, training=True
            )
        scored = stage.objective(out, views, progress=self.step / max(stage.steps, 1), timer=timer)
        with section(timer, "backward"):
            terms = {
                **scored.terms,
                **stage.representation.regularizers(out, self.step),
                **stage.shader.regularizers(self.step),
            }
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with section(timer, "optimizer"):
            schedule_lr(self.optimizer, self.step, self.stage.steps)
            self.optimizer.step()
        terms.update(scored.logs)
        return loss.detach(), {k: v.detach() for k, v in terms.items()}

    def run(self) -> None:
        """Train from ``self.step`` to ``stage.steps``. Checkpoints at the end, on cancel and every N steps."""
        total = self.stage.steps
        start_step, t0 = self.step, time.perf_counter()
        last_loss: float | None = None
        last_preview_t = t0
        bar = None
        if self.cfg.progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc=self.stage.name, dynamic_ncols=True, leave=True)
        metrics_path = self.run_dir / "metrics.jsonl"
        try:
            while self.step < total:
                loss, terms = self.train_step()
                self.step += 1
                preview = None
                checkpoint_due = self.step == total or (
                    self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0
                )
                if self.step % self.cfg.log_every == 0 or checkpoint_due:
                    # The one host sync: every log_every steps, and before any checkpoint so that a NaN is never
                    # written over the last good one.
                    values = {k: float(v) for k, v in terms.items()}
                    last_loss = float(loss)
                    if not math.isfinite(last_loss):
                        raise FloatingPointError(
                            f"{self.stage.name} loss became {last_loss} at step {self.step}; resume from the last "
                            "checkpoint with --resume after a change (under SDS: lower the guidance scale or set "
                            "sds.grad_clip)"
                        )
                    with open(metrics_path, "a", encoding="utf-8") as fh:
                        fh.write(
                            json.dumps(
                                {"stage": self.stage.name, "step": self.step, "loss": last_loss, **values}
                            )
                            + "\n"
                        )
                    if bar is not None:
                        bar.set_postfix(loss=f"{last_loss:.4g}", refresh=False)
                due_by_time = (
                    self.cfg.preview_every_s > 0
                    and time.perf_counter() - last_preview_t >= self.cfg.preview_every_s
                )
                if due_by_time or (
                    self.cfg.preview_every and (self.step % self.cfg.preview_every == 0 or self.step == total)
                ):
                    preview = self.preview()
                    last_preview_t = time.perf_counter()
                if checkpoint_due:
                    self.checkpoint()
                if bar is not None:
                    bar.update(1)
                elapsed = time.perf_counter() - t0
                done = self.step - start_step
                eta = elapsed / done * (total - self.step) if done else None
                if self.callback is not None:
                    try:
                        self.callback(
                            Progress(self.stage.name, self.step, total, last_loss, elapsed, eta, preview)
                        )
                    except Cancelled:
                        self.checkpoint()
                        raise
        finally:
            if bar is not None:
                bar.close()
