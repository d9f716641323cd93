"""The library call behind ``text3d fit``: photos in, a run folder with a textured mesh and measured accuracy out.

A fit run folder is laid out like a text-to-3D one (``config.yaml`` with the resolved :class:`FitConfig`,
``run.json``, ``metrics.jsonl``, ``checkpoints/``, ``previews/``, ``video/``, ``mesh/``) plus:

    metrics.json      PSNR and SSIM of every held-out view (never trained on) and their means
    eval/             ground truth | render | error images of a few held-out views
    transforms.json   the training poses as fitted (corrected when poses were refined), in the input's frame
    sfm/sparse/0/     plain photos only: the COLMAP model structure-from-motion solved (before refinement)
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from text3d.config import save_config
from text3d.data.load import load_photo_set
from text3d.data.photoset import PhotoSet
from text3d.data.transforms import write_transforms
from text3d.errors import Cancelled, ConfigError, ExportError
from text3d.export.mesh import placement_from_matrix
from text3d.io import write_json
from text3d.metrics import psnr, ssim
from text3d.pipeline import (
    MESH_DIR,
    RunRecord,
    RunResult,
    _export_summary,
    _mesh_files,
    deterministic_algorithms,
    export_trained,
    new_run_dir,
    resolve_device,
    train_stages,
)
from text3d.recipes import fit as fit_recipe
from text3d.recipes.fit import FitConfig
from text3d.training.previews import save_png
from text3d.training.stage import Stage
from text3d.training.trainer import Callback, schedule_lr
from text3d.views.photos import PhotoViews


def fit(cfg: FitConfig, callback: Callback | None = None, run_dir: str | Path | None = None) -> RunResult:
    """Fit the photos at ``cfg.data``: a NeRF or an SDF, then DMTet, then held-out evaluation and export.

    Raises:
        DataError, ConfigError: one-line user errors (bad photos, bad settings), before any run folder exists.
        Cancelled: the callback cancelled; the run folder is consistent and resumable.
    """
    if not cfg.data:
        raise ConfigError(
            "no photos given: text3d fit DATA (a folder with transforms.json, COLMAP or photos)"
        )
    fit_recipe.check_fit_config(cfg)
    device = resolve_device(cfg.device)
    with tempfile.TemporaryDirectory(prefix="text3d-sfm-") as sfm_work:
        photos = load_photo_set(
            cfg.data, bound=cfg.bound, margin=cfg.margin, holdout=cfg.holdout, sfm_dir=sfm_work
        )
        cfg = fit_recipe.with_representation(fit_recipe.with_pose_refinement(cfg, photos), photos)
        if photos.counts()["train"] < 3:
            raise ConfigError(
                f"{cfg.data}: only {photos.counts()['train']} training images; at least 3 are needed"
            )
        name = Path(cfg.data).resolve().name or "photos"
        run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg.out_dir, f"fit {name}")
        run_dir.mkdir(parents=True, exist_ok=True)
        kept = _keep_sfm_model(Path(sfm_work), run_dir)
        if kept is not None:  # run.json names the copy, not the temporary folder SfM worked in
            photos.meta["model_dir"] = str(kept.relative_to(run_dir))
    save_config(cfg, run_dir / "config.yaml")
    record = RunRecord(
        run_dir,
        {"kind": "fit", "prompt": f"photos: {name}", "data": photos.describe(), "seed": cfg.seed},
        device,
    )
    record.update(status="running")
    result = RunResult(run_dir=run_dir, status="running")
    with deterministic_algorithms(device.type == "cpu" or cfg.deterministic):
        try:
            torch.manual_seed(cfg.seed)
            stages = fit_recipe.build_stages(cfg, photos)
            last, finishing = train_stages(
                stages,
                fit_recipe.start_from,
                cfg.seed,
                cfg.trainer,
                device,
                run_dir,
                record,
                result,
                callback,
            )
            held_out = photos
            if cfg.views.refine_poses and cfg.eval_pose_steps > 0:
                finishing("aligning the held-out poses (scene frozen)")
                held_out = align_held_out_poses(last, photos, cfg.eval_pose_steps)
            finishing("evaluating the held-out views")
            metrics = evaluate(
                last, held_out, fit_recipe.target_background(cfg, photos), run_dir, cfg.eval_images
            )
            if held_out is not photos:
                metrics["held_out_poses"] = f"aligned: {cfg.eval_pose_steps} steps, scene frozen"
                write_json(run_dir / "metrics.json", metrics)
            record.update(metrics={k: metrics[k] for k in ("views", "psnr", "ssim")})
            write_transforms(run_dir / "transforms.json", _fitted_poses(last, photos), placement="input")
            if cfg.export.enabled:
                _export(last, cfg, photos, run_dir, record, result, finishing)
        except Cancelled:
            record.update(status="cancelled")
            raise
        except BaseException as err:
            record.update(status="failed", error=f"{type(err).__name__}: {err}")
            raise
    result.status = "completed"
    record.update(status="completed")
    return result


def _keep_sfm_model(work: Path, run_dir: Path) -> Path | None:
    """Plain photos: the model structure-from-motion solved (COLMAP binary, before any refinement) goes to
    ``run_dir/sfm/sparse/0``, for other tools and for measuring the poses; its feature database does not.
    Returns where it went (``None``: the photos came with poses)."""
    model = work / "sparse" / "0"
    if not model.is_dir():
        return None
    dest = run_dir / "sfm" / "sparse" / "0"
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model, dest)
    return dest


def align_held_out_poses(stage: Stage, photos: PhotoSet, steps: int) -> PhotoSet:
    """``photos`` with its held-out poses aligned to the fitted scene, as BARF evaluates: with the scene frozen,
    only per-view pose corrections of the held-out views are optimised (``steps`` Adam steps, the stage's own view
    settings and objective). Pose refinement leaves the scene in a frame that may differ from the input's by a
    small rigid motion (the gauge the photos cannot fix); without this the held-out PSNR measures that motion."""
    split = "test" if photos.counts()["test"] else "val"
    index = photos.indices(split)
    if len(index) == 0 or stage.objective is None:
        return photos
    held = dataclasses.replace(photos.subset(index), splits=["train"] * len(index))
    device = next(stage.parameters()).device
    views = PhotoViews(
        held, dataclasses.replace(stage.views.cfg, refine_poses=True), mode=stage.views.mode
    ).to(device)
    # the training's decay (views.pose_lr_final) over these steps: on tests/test_pose_refinement.py's scene 400
    # decaying steps reach 0.09 px and 45.9 dB, 200 constant ones 0.10 px and 39.9 dB (the last steps' jitter)
    optimizer = torch.optim.Adam(views.param_groups(), betas=stage.optim.betas, eps=stage.optim.eps)
    frozen = [p for p in stage.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for step in range(steps):
            schedule_lr(optimizer, step, steps)
            batch = views.sample(step, device)
            out = stage.representation.render(
                batch.cameras,
                batch.height,
                batch.width,
                stage.shader,
                stage.shader.sample(step, batch.cameras),
            )
            loss = sum(stage.objective(out, batch, progress=1.0).terms.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    c2w = photos.c2w.clone()
    c2w[index] = views.corrected_c2w().detach().to(c2w)
    return dataclasses.replace(photos, c2w=c2w)


@torch.no_grad()
def evaluate(
    stage: Stage, photos: PhotoSet, background: torch.Tensor | None, run_dir: Path, n_images: int = 4
) -> dict:
    """PSNR and SSIM of the stage's renders of every held-out (``test``, else ``val``) view, written to
    ``metrics.json``, with ground truth | render | error images of the first ``n_images`` in ``eval/``."""
    split = "test" if photos.counts()["test"] else "val"
    index = photos.indices(split).tolist()
    if not index:
        return {"split": None, "views": 0, "psnr": None, "ssim": None, "per_view": []}
    targets = photos.images if background is None else photos.composite(background)
    per_view = []
    for k, i in enumerate(index):
        out = fit_recipe.render_photo(stage, photos, i)
        pred = out.rgb[0].float().clamp(0, 1).cpu()
        gt = targets[i].float().cpu()
        per_view.append(
            {"name": photos.names[i], "psnr": round(psnr(pred, gt), 3), "ssim": round(ssim(pred, gt), 4)}
        )
        if k < n_images:
            err = (pred - gt).abs().mean(-1, keepdim=True).mul(4).clamp(0, 1).expand_as(gt)
            row = torch.cat([gt, pred, err], dim=1)
            save_png(run_dir / "eval" / f"{split}-{k:03d}.png", (row.numpy() * 255 + 0.5).astype(np.uint8))
    mean = {
        m: round(float(np.mean([v[m] for v in per_view if math.isfinite(v[m])])), 4) for m in ("psnr", "ssim")
    }
    metrics = {"split": split, "views": len(per_view), **mean, "stage": stage.name, "per_view": per_view}
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def _fitted_poses(stage: Stage, photos: PhotoSet) -> PhotoSet:
    """The photo set with its training poses replaced by the fitted ones (corrected, when refined)."""
    c2w = photos.c2w.clone()
    train = photos.indices("train")
    c2w[train] = stage.views.corrected_c2w().detach().to(c2w)
    return dataclasses.replace(photos, c2w=c2w)


def _export(stage, cfg: FitConfig, photos: PhotoSet, run_dir: Path, record, result, finishing) -> None:
    place = None
    extras = {"source": "text3d fit", "data": str(cfg.data), "placement": cfg.placement}
    if cfg.placement == "input":
        place = placement_from_matrix(photos.placement_matrix("input"))
        extras.update(units="the input's", frame=photos.frame.to_dict())
    try:
        exported = export_trained(
            stage,
            run_dir / MESH_DIR,
            run_dir.name,
            cfg.export,
            extras=extras,
            on_phase=lambda phase: finishing(f"exporting the mesh: {phase}"),
            place=place,
        )
    except ExportError as err:
        record.update(export={"error": str(err)})
        return
    result.meshes = _mesh_files(exported.files)
    record.data["outputs"]["meshes"] = [str(p.relative_to(run_dir)) for p in result.meshes]
    envs = [p for p in exported.files if p.name.endswith("_environment.hdr")]
    if envs:  # --materials pbr: the learned (or given) light beside the relightable mesh
        record.data["outputs"]["environment"] = str(envs[0].relative_to(run_dir))
    record.update(
        export={
            **_export_summary(exported),
            "placement": cfg.placement,
            "matrix": exported.placement.matrix().tolist(),
        }
    )
