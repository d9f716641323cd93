"""The training loop shared by all stages: sample cameras -> render -> SDS + regularisers -> Adam step.

Also checkpoints (one safetensors file per stage, written atomically, holding parameters, Adam state, RNG state and
the step in its metadata) and exact resume: a run killed after a checkpoint and resumed reaches bit-identical
parameters on CPU, because every random draw comes from the torch RNG whose state is checkpointed, and previews
draw no random numbers.

The only host syncs on the training path happen every ``log_every`` steps (reading the loss for the progress bar).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from text3d.cameras import sample_cameras, turntable_cameras
from text3d.errors import Cancelled
from text3d.guidance.prompts import TextEmbeddings
from text3d.guidance.stable_diffusion import StableDiffusionGuidance
from text3d.io import atomic_path, write_bytes, write_text
from text3d.profiling import SectionTimer, section
from text3d.render.shading import ShadingMode, ShadingParams, sample_shading
from text3d.stages.base import Stage


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


def depth_shading(depth: Tensor, opacity: Tensor, cameras) -> Tensor:
    """``[B, H, W, 3]`` grey headlight shading from screen-space normals of the depth map.

    Shows the geometry without the 4 extra field queries per sample that density-gradient normals cost.
    """
    b, h, w, _ = depth.shape
    origins, dirs = cameras.rays(h, w)
    pts = origins + dirs * depth
    dx = torch.zeros_like(pts)
    dy = torch.zeros_like(pts)
    dx[:, :, 1:-1] = pts[:, :, 2:] - pts[:, :, :-2]
    dy[:, 1:-1] = pts[:, :-2] - pts[:, 2:]
    normal = torch.nn.functional.normalize(torch.cross(dx, dy, dim=-1), dim=-1)
    lambert = (normal * -dirs).sum(-1, keepdim=True).abs()
    grey = (0.15 + 0.85 * lambert) * opacity + (1.0 - opacity)
    return grey.expand(b, h, w, 3)


def shaded_views(stage: Stage, n: int, res: int) -> np.ndarray:
    """``[2*res, n*res, 3]`` uint8: albedo turntable on top, geometry (depth-normal shading) below.

    Draws no random numbers, so previews never change the training trajectory.
    """
    cams_cfg = stage.cfg.cameras
    cams = turntable_cameras(
        n, cams_cfg.eval_elevation, cams_cfg.eval_distance, cams_cfg.eval_fovy, device=_device_of(stage)
    )
    with torch.no_grad():
        shading = ShadingParams(
            ShadingMode.ALBEDO, None, stage.cfg.shading.ambient, stage.cfg.shading.diffuse
        )
        out = stage.render(cams, res, res, shading, training=False)
        geometry = depth_shading(out.depth / out.opacity.clamp(min=1e-6), out.opacity.clamp(0, 1), cams)
    rows = [torch.cat(list(img), dim=1) for img in (out.rgb, geometry)]  # each [res, n*res, 3]
    img = torch.cat(rows, dim=0).clamp(0, 1)
    return (img.float().cpu().numpy() * 255 + 0.5).astype(np.uint8)


def auto_size(value: int, gpu_value: int, cpu_value: int, device: torch.device) -> int:
    """``value`` unless it is 0 ("auto"): then the GPU or the CPU figure, by where the stage runs."""
    if value:
        return value
    return gpu_value if device.type != "cpu" else cpu_value


def _device_of(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def save_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


# ---------------------------------------------------------------------------------------------------- checkpoints
def checkpoint_path(run_dir: str | Path, stage_name: str) -> Path:
    """Where a run keeps a stage's checkpoint: ``<run>/checkpoints/<stage>.safetensors``."""
    return Path(run_dir) / "checkpoints" / f"{stage_name}.safetensors"


def save_checkpoint(
    path: Path, stage: Stage, optimizer: torch.optim.Optimizer, step: int, extra: dict
) -> Path:
    """One file: ``model.*`` tensors, ``optim.<param>.<key>`` Adam state, ``rng.*`` states; JSON in metadata."""
    tensors: dict[str, Tensor] = {
        f"model.{k}": v.detach().contiguous() for k, v in stage.state_dict().items()
    }
    opt_state = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for pid, state in opt_state["state"].items():
        for key, val in state.items():
            if isinstance(val, Tensor):
                tensors[f"optim.{pid}.{key}"] = val.detach().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = val
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    tensors = {k: v.cpu() for k, v in tensors.items()}
    meta = {
        "step": str(step),
        "stage": stage.name,
        "param_groups": json.dumps(opt_state["param_groups"]),
        "optim_scalars": json.dumps(scalars),
        "extra": json.dumps(extra),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_checkpoint_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {
        "step": int(meta.get("step", -1)),
        "stage": meta.get("stage"),
        "extra": json.loads(meta.get("extra", "{}")),
    }


def load_checkpoint(path: Path, stage: Stage, optimizer: torch.optim.Optimizer | None) -> int:
    """Restore parameters, Adam state and RNG state; returns the step the checkpoint was taken after."""
    from safetensors import safe_open

    device = _device_of(stage)
    tensors = load_file(str(path), device="cpu")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    stage.load_state_dict(model_sd)
    if optimizer is not None:
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, key = k.split(".", 2)
                state.setdefault(int(pid), {})[key] = v.to(device) if key != "step" else v
        for pid, vals in json.loads(meta.get("optim_scalars", "{}")).items():
            state.setdefault(int(pid), {}).update(vals)
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(16) if f"rng.cuda.{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return int(meta["step"])


# ---------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Runs one stage to completion (or to cancellation) inside a run folder.

    Args:
        stage: the representation + renderer being optimised (already on its device).
        guidance: the frozen diffusion model.
        text: cached embeddings of the prompt.
        run_dir: the run folder; writes ``checkpoints/<stage>.safetensors``, ``previews/``, ``metrics.jsonl``.
        callback: called after every step with a :class:`Progress`; may raise :class:`Cancelled`.
    """

    def __init__(
        self,
        stage: Stage,
        guidance: StableDiffusionGuidance,
        text: TextEmbeddings,
        run_dir: Path,
        cfg: TrainerConfig = TrainerConfig(),
        callback: Callback | None = None,
    ):
        self.stage = stage
        self.guidance = guidance
        self.text = text
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.callback = callback
        self.device = _device_of(stage)
        scfg = stage.cfg.optim
        # fused: one kernel per step for all parameters, and the step count stays on the device (the default
        # for-each Adam reads it on the host every step).
        self.optimizer = torch.optim.Adam(
            stage.parameter_groups(), betas=scfg.betas, eps=scfg.eps, fused=True
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
        return save_checkpoint(
            self.ckpt_path, self.stage, self.optimizer, self.step, {"total": self.stage.cfg.steps}
        )

    def preview(self) -> Path:
        res = auto_size(self.cfg.preview_res, 128, self.stage.cfg.resolution, self.device)
        img = shaded_views(self.stage, self.cfg.preview_views, res)
        path = self.run_dir / "previews" / f"{self.stage.name}-{self.step:06d}.png"
        save_png(path, img)
        write_bytes(self.run_dir / "previews" / "latest.png", path.read_bytes())
        return path

    def train_step(self, timer: SectionTimer | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """One optimisation step. ``timer`` (benchmarks only) times render / vae_encode / unet / backward /
        optimizer; without it nothing here synchronises with the device."""
        scfg = self.stage.cfg
        with section(timer, "render"):
            self.stage.before_step(self.step)
            cams = sample_cameras(scfg.cameras, self.device)
            shading = sample_shading(scfg.shading, self.step, cams)
            out = self.stage.render(cams, scfg.resolution, scfg.resolution, shading, training=True)
        g = self.guidance(
            out.rgb,
            self.text,
            cams.elevation,
            cams.azimuth,
            scfg.sds,
            progress=self.step / max(scfg.steps, 1),
            timer=timer,
        )
        with section(timer, "backward"):
            terms = {"sds": g.loss, **self.stage.regularizers(out, self.step)}
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with section(timer, "optimizer"):
            self.optimizer.step()
        terms["grad_norm"] = g.grad_norm
        return loss.detach(), {k: v.detach() for k, v in terms.items()}

    def fit(self) -> None:
        """Train from ``self.step`` to ``stage.cfg.steps``. Checkpoints at the end, on cancel and every N steps."""
        total = self.stage.cfg.steps
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
                            f"{self.stage.name} loss became {last_loss} at step {self.step}; lower the guidance "
                            "scale or set sds.grad_clip, and resume from the last checkpoint with --resume"
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
