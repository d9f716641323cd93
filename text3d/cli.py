"""The ``text3d`` command: a thin shell over :mod:`text3d.pipeline`.

User errors (:class:`text3d.errors.Text3DError`) print one line to stderr and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from text3d.errors import Cancelled, ConfigError, Text3DError

EXIT_USER_ERROR = 2


def quiet_libraries() -> None:
    """Silence per-file loading bars and tokenizer chatter from transformers/diffusers; keep our own output."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except Exception:  # transformers optional at this point; loading reports real problems
        pass


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``generate`` and ``batch``; each maps to a config field through ``config.ALIASES``."""
    p.add_argument("--model", help="hub id or local diffusers folder (default: ModelConfig.model_id)")
    p.add_argument("--out", help="folder for run folders (default: outputs/)")
    p.add_argument("--seed", type=int)
    p.add_argument("--coarse-steps", type=int, help="NeRF stage steps (default 10000)")
    p.add_argument("--coarse-res", type=int, help="NeRF render size in pixels (default 64)")
    p.add_argument(
        "--refine-steps", type=int, help="DMTet refine stage steps (default 5000; 0 skips the stage)"
    )
    p.add_argument("--refine-res", type=int, help="refine stage render size in pixels (default 512)")
    p.add_argument("--negative", help="negative prompt")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (default 100)")
    p.add_argument(
        "--perp-neg", action="store_const", const="true", help="use Perp-Neg against the other views"
    )
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--preset", choices=None, help="fast or quality (default)")
    p.add_argument("--config", type=Path, help="a YAML file of settings (a run's config.yaml works)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config field by dotted path, e.g. --set coarse.sds.weighting=uniform (repeatable)",
    )


def _parse_set(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def config_from_args(args: argparse.Namespace, prompt: str | None):
    """Defaults <- preset <- --config file <- --set <- explicit flags."""
    from text3d.config import PRESETS, GenerateConfig, apply_overrides, load_config

    cfg = load_config(args.config) if args.config else GenerateConfig()
    if args.preset:
        if args.preset not in PRESETS:
            raise ConfigError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
        cfg = apply_overrides(cfg, PRESETS[args.preset])
    cfg = apply_overrides(cfg, _parse_set(args.set))
    flags = {
        "prompt": prompt,
        "model": args.model,
        "seed": args.seed,
        "coarse-steps": args.coarse_steps,
        "coarse-res": args.coarse_res,
        "refine-steps": args.refine_steps,
        "refine-res": args.refine_res,
        "negative": args.negative,
        "guidance-scale": args.guidance_scale,
        "perp-neg": args.perp_neg,
        "device": args.device,
    }
    cfg = apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
    if args.out:
        cfg = apply_overrides(cfg, {"out_dir": args.out})
    return cfg


RUN_FLAGS = (
    "model", "out", "seed", "coarse_steps", "coarse_res", "refine_steps", "refine_res", "negative",
    "guidance_scale", "perp_neg", "device", "preset", "config", "set",
)  # fmt: skip
"""``generate`` options (see :func:`add_run_options`) that ``--resume`` ignores: the run's config.yaml rules."""


def ignored_by_resume(args: argparse.Namespace) -> list[str]:
    """What ``generate --resume RUN`` was given besides the folder: the prompt and each run option."""
    ignored = [f"the prompt {args.prompt!r}"] if args.prompt else []
    return ignored + [f"--{name.replace('_', '-')}" for name in RUN_FLAGS if getattr(args, name, None)]


class StopOnSignal:
    """SIGTERM and Ctrl-C as a cancel: once training has started, the first signal makes the run stop at its next
    step (or turntable frame, or export phase) like the web app's Cancel button: checkpointed and marked
    ``cancelled``, resumable with ``--resume``. A second signal, or one before the first step, interrupts at
    once. Pass the instance as the run's progress callback; a no-op outside the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self.started = False
        self._saved: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested or not self.started:
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self, progress) -> None:
        self.started = True
        if self.requested:
            raise Cancelled()


def cmd_generate(args: argparse.Namespace) -> int:
    from text3d.pipeline import RunFinished, generate, resume

    if args.resume:
        ignored = ignored_by_resume(args)
        if ignored:
            print(
                f"warning: --resume continues {args.resume} with the settings in its config.yaml; ignored: "
                + ", ".join(ignored),
                file=sys.stderr,
            )
        try:
            with StopOnSignal() as stop:
                result = resume(args.resume, callback=stop)
        except RunFinished as done:
            print(done, file=sys.stderr)
            return 0
    else:
        cfg = config_from_args(args, args.prompt)
        with StopOnSignal() as stop:
            result = generate(cfg, callback=stop)
    _print_result(result)
    return 0


def _print_result(result) -> None:
    print(f"done: {result.run_dir}")
    if result.video:
        print(f"video: {result.video}")
    for mesh in result.meshes:
        print(f"mesh: {mesh}")


FIT_ALIASES: dict[str, tuple[str, ...]] = {
    "representation": ("coarse.representation",),
    "coarse-steps": ("coarse.steps",),
    "refine-steps": ("refine.steps",),
    "rays": ("coarse.rays_per_step",),
    "holdout": ("holdout",),
    "placement": ("placement",),
    "refine-poses": ("views.refine_poses",),
    "seed": ("seed",),
    "device": ("device",),
    "loss": ("coarse.photometric.loss", "refine.photometric.loss"),
    "materials": ("materials",),
    "env": ("env",),
    "material-steps": ("material.steps",),
}
"""``text3d fit`` flags, mapped to the FitConfig fields they set."""


def fit_config_from_args(args: argparse.Namespace):
    """Defaults <- preset <- --config file <- --set <- explicit flags (as for generate)."""
    from text3d.config import apply_overrides, load_config
    from text3d.recipes.fit import FIT_PRESETS, FitConfig

    cfg = load_config(args.config, FitConfig) if args.config else FitConfig()
    if args.preset:
        if args.preset not in FIT_PRESETS:
            raise ConfigError(f"unknown preset {args.preset!r}; choose one of {', '.join(FIT_PRESETS)}")
        cfg = apply_overrides(cfg, FIT_PRESETS[args.preset])
    cfg = apply_overrides(cfg, _parse_set(args.set))
    flags = {
        "representation": args.representation,
        "coarse-steps": args.coarse_steps,
        "refine-steps": args.refine_steps,
        "rays": args.rays,
        "holdout": args.holdout,
        "placement": args.placement,
        "refine-poses": args.refine_poses,
        "seed": args.seed,
        "device": args.device,
        "loss": args.loss,
        "materials": getattr(args, "materials", None),
        "env": None if getattr(args, "env", None) is None else str(args.env),
        "material-steps": getattr(args, "material_steps", None),
    }
    for key, value in flags.items():
        if value is not None:
            for path in FIT_ALIASES[key]:
                cfg = apply_overrides(cfg, {path: value})
    if args.data is not None:
        cfg = apply_overrides(cfg, {"data": str(args.data)})
    if args.out:
        cfg = apply_overrides(cfg, {"out_dir": args.out})
    return cfg


def cmd_fit(args: argparse.Namespace) -> int:
    from text3d.config import load_config
    from text3d.fitting import fit
    from text3d.recipes.fit import FitConfig

    if args.resume:
        config = Path(args.resume) / "config.yaml"
        if not config.is_file():
            raise ConfigError(f"{args.resume} is not a text3d fit run folder (no config.yaml)")
        result = fit(load_config(config, FitConfig), run_dir=args.resume)
    else:
        if args.data is None:
            raise ConfigError(
                "no photos given: text3d fit DATA (a folder with transforms.json, COLMAP or photos)"
            )
        result = fit(fit_config_from_args(args))
    _print_result(result)
    import json

    record = json.loads((result.run_dir / "run.json").read_text(encoding="utf-8"))
    sfm = record.get("data", {}).get("meta", {}).get("sfm")
    if sfm:
        print(sfm_summary(sfm))
    metrics = result.run_dir / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text(encoding="utf-8"))
        if m.get("views"):
            print(f"held-out {m['split']} views: {m['views']}, PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}")
    return 0


def sfm_summary(sfm: dict) -> str:
    """One line from run.json's SfM report: how many photos were registered, and which were not."""
    missed = sfm["unregistered"]
    total = sfm["registered"] + len(missed)
    line = f"structure-from-motion registered {sfm['registered']} of {total} photos ({sfm['points']} points)"
    if missed:
        line += "; not registered (not fitted): " + ", ".join(missed)
    return line


TEXTURE_ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt",),
    "negative": ("negative_prompt",),
    "images": ("images",),
    "image": ("image",),
    "azimuth": ("azimuth",),
    "elevation": ("elevation",),
    "steps": ("steps",),
    "res": ("resolution",),
    "texture_size": ("colour.texture_size", "export.texture_size"),
    "colour": ("colour.colour",),
    "max_faces": ("max_faces",),
    "model": ("model.model_id",),
    "seed": ("seed",),
    "device": ("device",),
}
"""``text3d texture`` flags, mapped to the TextureConfig fields they set."""


def texture_config_from_args(args: argparse.Namespace):
    """Defaults <- preset <- --config file <- --set <- explicit flags (as for generate)."""
    from text3d.config import apply_overrides, load_config
    from text3d.recipes.texture import TEXTURE_PRESETS, TextureConfig

    cfg = load_config(args.config, TextureConfig) if args.config else TextureConfig()
    if args.preset:
        if args.preset not in TEXTURE_PRESETS:
            raise ConfigError(f"unknown preset {args.preset!r}; choose one of {', '.join(TEXTURE_PRESETS)}")
        cfg = apply_overrides(cfg, TEXTURE_PRESETS[args.preset])
    cfg = apply_overrides(cfg, _parse_set(args.set))
    for key, paths in TEXTURE_ALIASES.items():
        value = getattr(args, key)
        if value is not None:
            for path in paths:
                cfg = apply_overrides(cfg, {path: str(value)})
    if args.unwrap:
        cfg = apply_overrides(cfg, {"unwrap": "true"})
    cfg = apply_overrides(cfg, {"mesh": str(args.mesh)})
    if args.out:
        cfg = apply_overrides(cfg, {"out_dir": args.out})
    return cfg


def cmd_texture(args: argparse.Namespace) -> int:
    from text3d.texturing import load_texture_config, texture

    with StopOnSignal() as stop:
        if args.resume:
            result = texture(load_texture_config(args.resume), callback=stop, run_dir=args.resume)
        else:
            if args.mesh is None:
                raise ConfigError("no mesh given: text3d texture MESH --prompt TEXT (or --images DIR)")
            result = texture(texture_config_from_args(args), callback=stop)
    _print_result(result)
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    from text3d.pipeline import refine

    with StopOnSignal() as stop:
        result = refine(
            args.run_dir,
            steps=args.refine_steps,
            resolution=args.refine_res,
            device=args.device,
            callback=stop,
        )
    _print_result(result)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from text3d.bench import BenchConfig, format_table, run_bench
    from text3d.config import GenerateConfig, apply_overrides

    run_cfg = apply_overrides(GenerateConfig(), _parse_set(args.set))
    cfg = BenchConfig(
        size=args.size,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
        warmup=args.warmup,
        steps=args.steps,
        device=args.device,
        dtype=args.dtype,
        peak_tflops=args.peak_tflops,
        out_dir=args.out,
        profile=args.profile,
        sds_size=args.sds_size,
        run=run_cfg,
    )
    records, path = run_bench(cfg)
    print(format_table(records))
    for r in records:
        if r["profile_top"]:
            costs = ", ".join(f"{t['op']} {t['ms']:.1f} ms" for t in r["profile_top"])
            print(f"{r['stage']} profile, biggest costs: {costs}")
    print(f"wrote {path}")
    return 0


def export_config_from_args(args: argparse.Namespace):
    """The run's saved ``export`` settings <- ``--set`` <- explicit flags."""
    from text3d.config import apply_overrides
    from text3d.pipeline import load_run_config

    cfg = load_run_config(args.run_dir).export
    sets = {k.removeprefix("export."): v for k, v in _parse_set(args.set).items()}
    flags = {
        "formats": args.format,
        "texture_size": args.texture_size,
        "target_faces": args.faces,
        "threshold": args.threshold,
        "size": args.size,
        "center": args.center,
        "grid_resolution": args.grid_resolution,
    }
    return apply_overrides(cfg, {**sets, **{k: v for k, v in flags.items() if v is not None}})


def cmd_export(args: argparse.Namespace) -> int:
    from text3d.pipeline import export_run

    result = export_run(args.run_dir, export_config_from_args(args), device=args.device)
    for mesh in result.meshes:
        print(f"mesh: {mesh}")
    return 0


def cmd_random_model(args: argparse.Namespace) -> int:
    from text3d.guidance.random_models import save_random_sd

    folder = save_random_sd(Path(args.folder), size=args.size, seed=args.seed)
    print(f"wrote a random-weight {args.size} Stable Diffusion to {folder} (for tests and speed work only)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from text3d import __version__

    parser = argparse.ArgumentParser(
        prog="text3d", description="Text to textured 3D mesh with Score Distillation."
    )
    parser.add_argument("--version", action="version", version=f"text3d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate one asset from a prompt")
    gen.add_argument("prompt", nargs="?", default=None, help='what to make, e.g. "a ceramic owl mug"')
    add_run_options(gen)
    gen.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue a run folder from its checkpoints"
    )
    gen.set_defaults(func=cmd_generate)

    ref = sub.add_parser(
        "refine", help="run (or continue) the DMTet fine stage on a run whose coarse stage finished"
    )
    ref.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder made by text3d generate")
    ref.add_argument(
        "--refine-steps", type=int, help="fine stage steps (default: the run's, or 5000 if it had none)"
    )
    ref.add_argument("--refine-res", type=int, help="refine stage render size in pixels (default: the run's)")
    ref.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    ref.set_defaults(func=cmd_refine)

    fit = sub.add_parser(
        "fit",
        help="reconstruct a textured mesh from photos (transforms.json, COLMAP, or plain photos)",
        description="A NeRF fitted to the training photos, then a DMTet mesh, evaluated on held-out views "
        "(PSNR, SSIM) and exported in the input's own frame and units (--placement normalized for a centred asset).",
    )
    fit.add_argument(
        "data", nargs="?", type=Path, help="a folder with transforms.json, sparse/0 + images/, or photos"
    )
    fit.add_argument("--out", help="folder for run folders (default: outputs/)")
    fit.add_argument(
        "--representation",
        choices=("auto", "nerf", "sdf"),
        help="the coarse field before the DMTet mesh: a NeRF, a sphere-traced SDF (with --refine-steps 0 its zero "
        "level is the mesh), or auto (default: sdf for masked photos with fixed poses, else nerf)",
    )
    fit.add_argument("--coarse-steps", type=int, help="NeRF or SDF steps (default 2000)")
    fit.add_argument("--refine-steps", type=int, help="DMTet steps on whole photos (default 300; 0 skips)")
    fit.add_argument("--rays", type=int, help="random rays per NeRF or SDF step (default 4096)")
    fit.add_argument(
        "--holdout", type=int, help="sets without a test split: hold out every N-th photo (default 8)"
    )
    fit.add_argument("--placement", choices=("input", "normalized"), help="export frame (default input)")
    fit.add_argument(
        "--refine-poses",
        action="store_const",
        const="true",
        help="learn a pose correction per photo (BARF-style)",
    )
    fit.add_argument("--loss", choices=("l2", "l1", "huber"), help="photometric loss (default l2)")
    fit.add_argument(
        "--materials",
        choices=("none", "pbr"),
        help="pbr: recover base colour, roughness, metallic and the environment light on the mesh "
        "(a relightable asset + <name>_environment.hdr)",
    )
    fit.add_argument("--env", type=Path, help="with --materials pbr: a known environment .hdr, held fixed")
    fit.add_argument("--material-steps", type=int, help="materials stage steps (default 500)")
    fit.add_argument("--seed", type=int)
    fit.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    fit.add_argument("--preset", help="fast or quality (default)")
    fit.add_argument("--config", type=Path, help="a YAML file of settings (a fit run's config.yaml works)")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any FitConfig field")
    fit.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue a fit run folder from its checkpoints"
    )
    fit.set_defaults(func=cmd_fit)

    tex = sub.add_parser(
        "texture",
        help="texture a given mesh from a prompt, posed photos or one concept image",
        description="The mesh's vertices, faces and UVs are kept; only its base-colour texture is made. Output: "
        "GLB and OBJ (+MTL+PNG) in the input's frame and units, a turntable video and previews.",
    )
    tex.add_argument("mesh", nargs="?", type=Path, help="the mesh file (GLB, glTF, OBJ, PLY)")
    tex.add_argument("--prompt", help="what the texture should look like")
    tex.add_argument("--negative", help="negative prompt")
    tex.add_argument("--images", help="a folder of posed photos (transforms.json or COLMAP)")
    tex.add_argument("--image", help="one concept image, seen from --azimuth/--elevation (needs --prompt)")
    tex.add_argument("--azimuth", type=float, help="concept image's view azimuth, degrees (default 0: front)")
    tex.add_argument("--elevation", type=float, help="concept image's view elevation, degrees (default 0)")
    tex.add_argument("--unwrap", action="store_true", help="new UVs (xatlas) even if the mesh has its own")
    tex.add_argument("--steps", type=int, help="optimisation steps (default 1000)")
    tex.add_argument("--res", type=int, help="render size for the prompt / concept image (default 64)")
    tex.add_argument(
        "--texture-size", dest="texture_size", type=int, help="texture side in texels (default 1024)"
    )
    tex.add_argument("--colour", choices=("texture", "field"), help="what is optimised (default texture)")
    tex.add_argument("--max-faces", dest="max_faces", type=int, help="refuse larger meshes (default 2000000)")
    tex.add_argument("--model", help="diffusion model id or folder (toy: the bundled toy model)")
    tex.add_argument("--seed", type=int)
    tex.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    tex.add_argument("--out", help="folder for run folders (default: outputs/)")
    tex.add_argument("--preset", help="quality (default), fast or toy")
    tex.add_argument(
        "--config", type=Path, help="a YAML file of settings (a texture run's config.yaml works)"
    )
    tex.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any TextureConfig field"
    )
    tex.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a texture run folder")
    tex.set_defaults(func=cmd_texture)

    rds = sub.add_parser(
        "render-dataset",
        help="render a multi-view synthetic set of a mesh with Blender Cycles (NeRF-synthetic layout)",
        add_help=False,
    )
    rds.set_defaults(func=cmd_render_dataset)  # its own parser reads the rest (main() hands it over)

    from text3d.batch.command import add_batch_parser

    add_batch_parser(sub)

    from text3d.dataset.command import add_dataset_parser

    add_dataset_parser(sub)

    from text3d.toy.cli import add_toy_parser

    add_toy_parser(sub)

    bench = sub.add_parser(
        "bench", help="speed benchmark on the real SD 2.1-base architecture (random weights)"
    )
    bench.add_argument("--size", choices=("sd21-base", "tiny"), default="sd21-base")
    bench.add_argument("--stages", default="coarse,refine", help="comma-separated stages to time")
    bench.add_argument(
        "--sds-size",
        type=int,
        default=0,
        help="image size SDS works at (default: the model's own; 512 for SD)",
    )
    bench.add_argument("--steps", type=int, default=20, help="timed steps per stage")
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--device", default="auto")
    bench.add_argument(
        "--dtype", help="auto (fp16 on CUDA), fp32, fp16, bf16; default: the run's model.dtype"
    )
    bench.add_argument("--peak-tflops", type=float, help="device peak for the utilisation column")
    bench.add_argument("--out", default="bench/results", help="folder for <date>-<device>.json")
    bench.add_argument(
        "--profile", action="store_true", help="also write a torch.profiler table of one step per stage"
    )
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run-config overrides")
    bench.set_defaults(func=cmd_bench)

    exp = sub.add_parser(
        "export",
        help="write textured meshes (GLB, OBJ+MTL+PNG, PLY) of a run into RUN_DIR/mesh/",
        description="Meshes are Y-up with the front (the azimuth-0 view) facing +Z, in metres, centred, and "
        "scaled so the largest side is --size metres. Defaults come from the run's config.yaml (export section).",
    )
    exp.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder made by text3d generate")
    exp.add_argument("--format", metavar="LIST", help="comma-separated: glb, obj, ply (default glb,obj)")
    exp.add_argument("--texture-size", type=int, metavar="PX", help="texture side in pixels (default 1024)")
    exp.add_argument("--faces", type=int, metavar="N", help="decimate to about N triangles; 0 keeps all")
    exp.add_argument(
        "--threshold",
        metavar="auto|DENSITY",
        help="coarse-only runs: isosurface density level (default auto)",
    )
    exp.add_argument(
        "--size", type=float, metavar="M", help="largest side in metres (default 1; 0 = field units)"
    )
    exp.add_argument("--center", choices=("center", "ground", "none"), help="placement (default center)")
    exp.add_argument("--grid-resolution", type=int, metavar="N", help="coarse-only runs: marching-tets grid")
    exp.add_argument("--device", help="where to evaluate the fields (default: the run's device setting)")
    exp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any export setting, e.g. --set uv_padding=8",
    )
    exp.set_defaults(func=cmd_export)

    rnd = sub.add_parser(
        "random-model", help="write a random-weight SD model (tests, speed work; no download)"
    )
    rnd.add_argument("folder")
    rnd.add_argument("--size", choices=("tiny", "sd21-base"), default="tiny")
    rnd.add_argument("--seed", type=int, default=0)
    rnd.set_defaults(func=cmd_random_model)

    rel = sub.add_parser(
        "relight",
        help="turntable of a --materials pbr fit under any environment map",
        description="Renders RUN_DIR's PBR asset (materials stage) under FILE.hdr (default: the learned light) into "
        "RUN_DIR/relight/.",
    )
    rel.add_argument("run_dir", type=Path)
    rel.add_argument(
        "--env", type=Path, help="an equirectangular Radiance .hdr (Blender's world orientation)"
    )
    rel.add_argument("--frames", type=int, default=24)
    rel.add_argument("--res", type=int, default=256, help="frame size in pixels")
    rel.add_argument("--device", default="cpu")
    rel.set_defaults(func=cmd_relight)
    return parser


def cmd_relight(args: argparse.Namespace) -> int:
    from text3d.relight import relight

    if args.frames < 1 or args.res < 8:
        raise ConfigError("--frames must be >= 1 and --res >= 8")
    path = relight(args.run_dir, args.env, frames=args.frames, resolution=args.res, device=args.device)
    print(f"relit turntable: {path}")
    return 0


def cmd_render_dataset(argv: list[str]) -> int:
    """``text3d render-dataset ...``: the scene generator parses its own arguments."""
    from text3d.scenes.render import main as render_main

    return render_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["render-dataset"]:
        quiet_libraries()
        return cmd_render_dataset(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_libraries()
    if args.command == "generate" and not args.resume and (args.prompt is None or not args.prompt.strip()):
        print(
            'error: the prompt is empty; describe the object, e.g. text3d generate "a ceramic owl mug"',
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    try:
        return args.func(args)
    except Text3DError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Cancelled:
        again = (
            f"text3d {args.command} --resume RUN_DIR"
            if args.command in ("generate", "fit", "texture")
            else f"text3d {args.command} RUN_DIR"
        )
        print(f"cancelled (checkpointed); continue with {again}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"interrupted; resume with text3d {args.command} --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
