"""Speed harness: real training steps on the real SD 2.1-base architecture with random weights.

Speed and memory do not depend on weight values, so random weights give exact figures with nothing downloaded.
For each stage at the run's default settings it measures iterations per second, the milliseconds spent in render,
VAE encode, UNet, backward and optimizer step, peak memory, and FLOPs per iteration (``torch.utils.flop_counter``)
with the utilisation they imply. Results go to ``bench/results/<date>-<device>.json`` as a list of records.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from text3d.config import GenerateConfig, to_dict
from text3d.errors import ConfigError
from text3d.guidance.random_models import build_random_sd, build_random_taesd
from text3d.guidance.stable_diffusion import (
    ModelConfig,
    StableDiffusionGuidance,
    check_model_config,
    resolve_dtype,
)
from text3d.io import write_json, write_text
from text3d.pipeline import build_stages, resolve_device
from text3d.profiling import SectionTimer
from text3d.recipes.text_to_3d import start_from
from text3d.training.trainer import Trainer, TrainerConfig

SECTIONS = ("render", "vae_encode", "unet", "backward", "optimizer")

PEAK_TFLOPS = {"H100": 790.0, "H200": 790.0, "A100": 312.0}
"""Dense bf16/fp16 tensor-core peaks (TFLOP/s) used for utilisation when the GPU name matches."""


@dataclass(frozen=True)
class BenchConfig:
    size: str = "sd21-base"
    """``sd21-base`` (real architecture) or ``tiny`` (CPU smoke test of the harness)."""
    stages: tuple[str, ...] = ("coarse", "refine")
    warmup: int = 3
    steps: int = 20
    device: str = "auto"
    dtype: str | None = None
    """``None``: the run's ``model.dtype`` (``auto`` = fp16 on CUDA, fp32 elsewhere)."""
    peak_tflops: float | None = None
    """Peak for utilisation; ``None``: from :data:`PEAK_TFLOPS` by GPU name (no utilisation on unknown devices)."""
    sds_size: int = 0
    """The image size SDS encodes renders at (the UNet's ``sample_size`` times the VAE's factor); 0 keeps the
    model's own. ``bench/peer_side_by_side.py`` sets 512, the size stable-dreamfusion always resizes to."""
    out_dir: str = "bench/results"
    profile: bool = False
    """Also profile one step per stage into ``<out_dir>/<date>-<device>-profile-<stage>-<settings>-<HHMMSS>.txt``
    (named in the record's ``profile``), and name its three biggest costs in ``profile_top``."""
    run: GenerateConfig = field(default_factory=GenerateConfig)
    """Stage settings (the defaults a user's run gets)."""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU {platform.machine()} x{torch.get_num_threads()} threads"


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    # CPU: the process's peak resident set (ru_maxrss is KiB on Linux); includes the models and Python itself.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _count_flops(trainer: Trainer, guidance: StableDiffusionGuidance) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, guidance.eager():  # compiled kernels bypass the counter; the maths is the same
        trainer.train_step()
    trainer.step += 1
    return float(counter.get_total_flops())


def profile_step(trainer: Trainer, device: torch.device, path: Path, row_limit: int = 25) -> list[dict]:
    """Profile one training step with ``torch.profiler`` and write two tables to ``path``: the step's sections
    (``text3d.render``, ``text3d.vae_encode``, ``text3d.unet``, ``text3d.backward``, ``text3d.optimizer``) by total
    time, then the ``row_limit`` ops that cost most by self device time on a GPU (self CPU time elsewhere).
    Returns those three biggest ops as ``{"op", "ms"}``.

    The sections get their own table because a range's *self* time is tiny (its ops carry the time), so a cut by
    self time may drop them. Should Kineto record nothing (seen once in a long test session), the step is
    profiled again with the legacy autograd profiler, and the header says so.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        trainer.train_step(SectionTimer(device))
    trainer.step += 1
    events, profiler = prof.key_averages(), "kineto"
    if len(events) == 0:
        with torch.autograd.profiler.profile(use_kineto=False, use_cuda=device.type == "cuda") as legacy:
            trainer.train_step(SectionTimer(device))
        trainer.step += 1
        events, profiler = legacy.key_averages(), "legacy autograd profiler"
    if len(events) == 0:
        raise RuntimeError("torch.profiler recorded no events for the profiled step")
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total_key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    sections = sorted(
        (e for e in events if e.key.startswith("text3d.")), key=lambda e: getattr(e, total_key), reverse=True
    )
    ops = sorted(
        (e for e in events if not e.key.startswith(("text3d.", "ProfilerStep"))),
        key=lambda e: getattr(e, key),
        reverse=True,
    )
    section_rows = "\n".join(
        f"{e.key:<24} {getattr(e, total_key) / 1000.0:12.3f} ms  {e.count:6d} calls" for e in sections
    )
    top = [{"op": e.key, "ms": round(getattr(e, key) / 1000.0, 3)} for e in ops[:3]]
    table = events.table(sort_by=key, row_limit=row_limit)
    header = (
        f"# one {trainer.stage.name} step on {device_name(device)}, torch {torch.__version__}, "
        f"{_dt.date.today().isoformat()}, {profiler}\n"
    )
    body = f"## sections, by {total_key}\n{section_rows}\n\n## ops, by {key}\n{table}\n"
    write_text(path, header + body)
    return top


def load_random_guidance(
    size: str,
    device: torch.device,
    dtype: torch.dtype,
    model: ModelConfig | None = None,
    sds_size: int = 0,
) -> StableDiffusionGuidance:
    """The random-weight model of ``size``, with the run's encoder choice and speed settings (``model``) applied as
    :func:`text3d.pipeline.load_guidance` applies them to a downloaded one; ``sds_size`` > 0 sets the image size
    SDS works at (see :attr:`BenchConfig.sds_size`)."""
    model = model or ModelConfig()
    check_model_config(model)
    parts = build_random_sd(size)
    if model.encoder == "taesd":
        parts["vae"] = build_random_taesd("taesd" if size == "sd21-base" else "tiny")
    if sds_size > 0:
        vae = parts["vae"].config
        factor = 2 ** (len(getattr(vae, "block_out_channels", None) or vae.encoder_block_out_channels) - 1)
        if sds_size % factor:
            raise ConfigError(f"--sds-size must be a multiple of the VAE's factor {factor}, got {sds_size}")
        parts["unet"].register_to_config(sample_size=sds_size // factor)
    del parts["vae"].decoder  # as from_pretrained: SDS never decodes
    for name in ("unet", "vae", "text_encoder"):
        parts[name].to(device=device, dtype=dtype)
    return StableDiffusionGuidance(**parts).optimize(
        channels_last=model.channels_last, compile_mode=model.compile
    )


def bench_stage(
    trainer: Trainer, warmup: int, steps: int, device: torch.device
) -> tuple[float, dict[str, float]]:
    """Returns iterations per second and the mean ms per section over ``steps`` timed steps."""
    for _ in range(warmup):
        trainer.train_step()
        trainer.step += 1
    timer = SectionTimer(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(timer)
        trainer.step += 1
    elapsed = time.perf_counter() - t0
    return steps / elapsed, {k: timer.ms.get(k, 0.0) / steps for k in SECTIONS}


def run_bench(cfg: BenchConfig, write: bool = True) -> tuple[list[dict], Path | None]:
    """Benchmark the requested stages; returns the new records and the JSON file they were appended to."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype or cfg.run.model.dtype, device)
    name = device_name(device)
    peak = cfg.peak_tflops
    if peak is None:
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    stem = f"{_dt.date.today().isoformat()}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"
    guidance = load_random_guidance(cfg.size, device, dtype, cfg.run.model, cfg.sds_size)
    text = guidance.prepare_text("a ceramic owl mug")
    guidance.release_text_encoder()

    torch.manual_seed(0)
    stages = {s.name: s for s in build_stages(cfg.run, guidance, text)}
    unknown = [s for s in cfg.stages if s not in stages]
    if unknown:
        raise ConfigError(f"unknown or disabled stage(s) {unknown}; available: {', '.join(sorted(stages))}")
    records = []
    previous = None
    with tempfile.TemporaryDirectory(prefix="text3d-bench-") as tmp:
        for stage in stages.values():
            start_from(stage, previous)
            stage.to(device)
            previous = stage
            if stage.name not in cfg.stages:
                continue
            stage_cfg = {"coarse": cfg.run.coarse, "refine": cfg.run.refine}[stage.name]
            trainer = Trainer(stage, Path(tmp), TrainerConfig(progress_bar=False))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            it_per_s, ms = bench_stage(trainer, cfg.warmup, cfg.steps, device)
            flops = _count_flops(trainer, guidance)
            achieved = flops * it_per_s / 1e12
            top = profile_path = None
            if cfg.profile:
                tag = "-".join(
                    [cfg.size, str(dtype).replace("torch.", ""), cfg.run.model.encoder]
                    + ([] if guidance.memory_format == torch.channels_last else ["nchw"])
                    + ([] if cfg.run.model.compile == "off" else [cfg.run.model.compile])
                )
                clock = _dt.datetime.now().strftime("%H%M%S")  # several runs a day never overwrite each other
                profile_path = Path(cfg.out_dir) / f"{stem}-profile-{stage.name}-{tag}-{clock}.txt"
                top = profile_step(trainer, device, profile_path)
            records.append(
                {
                    "device": name,
                    "stage": stage.name,
                    "it_per_s": round(it_per_s, 3),
                    "ms": {k: round(v, 2) for k, v in ms.items()},
                    "peak_mem_gb": round(_peak_memory_gb(device), 3),
                    "torch": torch.__version__,
                    "settings": {
                        "model_size": cfg.size,
                        "sds_image_size": guidance.image_size,
                        "dtype": str(dtype).replace("torch.", ""),
                        "encoder": cfg.run.model.encoder,
                        "channels_last": guidance.memory_format == torch.channels_last,
                        "compile": cfg.run.model.compile,
                        "resolution": stage.views.resolution,
                        "batch_size": stage_cfg.cameras.batch_size,
                        "warmup": cfg.warmup,
                        "steps": cfg.steps,
                        "stage_config": to_dict(stage_cfg),
                    },
                    "tflop_per_iter": round(flops / 1e12, 4),
                    "achieved_tflops": round(achieved, 3),
                    "utilisation": None if peak is None else round(achieved / peak, 4),
                    "profile": None if profile_path is None else profile_path.name,
                    "profile_top": top,
                    "date": _dt.date.today().isoformat(),
                }
            )
    path = None
    if write:
        path = Path(cfg.out_dir) / f"{stem}.json"
        earlier = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        write_json(path, [*earlier, *records])  # one file per day and device, a list of records
    return records, path


def format_table(records: list[dict]) -> str:
    head = ["stage", "it/s", *[f"{s} ms" for s in SECTIONS], "peak GB", "TFLOP/it", "util"]
    rows = [head]
    for r in records:
        util = "-" if r["utilisation"] is None else f"{100 * r['utilisation']:.1f}%"
        rows.append(
            [
                r["stage"],
                f"{r['it_per_s']:.2f}",
                *[f"{r['ms'][s]:.1f}" for s in SECTIONS],
                f"{r['peak_mem_gb']:.2f}",
                f"{r['tflop_per_iter']:.3f}",
                util,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    if not records:
        return "device: ?\n" + "\n".join(lines)
    st = records[0]["settings"]
    layout = "channels_last" if st.get("channels_last") else "NCHW"
    how = f"{st['model_size']}, {st['dtype']}, encoder {st.get('encoder', 'vae')}, {layout}, compile {st.get('compile', 'off')}"
    return f"device: {records[0]['device']} · {how}\n" + "\n".join(lines)
