"""The refine stage: initialisation from the coarse stage, gradients into the mesh, checkpoint/resume, and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES
from safetensors.torch import load_file

from text3d.cameras import make_cameras
from text3d.cli import main
from text3d.errors import Cancelled
from text3d.pipeline import build_stages, deterministic_algorithms
from text3d.recipes.text_to_3d import start_from
from text3d.training.checkpoint import read_checkpoint_meta
from text3d.training.trainer import Trainer


@pytest.fixture
def trained_coarse(make_config, tiny_guidance, tmp_path):
    """A coarse stage trained for the tiny config's steps with the tiny random SD, and that config."""
    cfg = make_config("a blue vase")
    text = tiny_guidance.prepare_text(cfg.prompt, cfg.negative_prompt)
    coarse = build_stages(cfg, tiny_guidance, text)[0]
    (tmp_path / "coarse-run").mkdir()
    Trainer(coarse, tmp_path / "coarse-run", cfg.trainer).run()
    return cfg, coarse, text


def _refine_stage(cfg, coarse, guidance=None, text=None):
    stage = build_stages(cfg, guidance, text)[1]
    start_from(stage, coarse)
    return stage


def _render(stage, cams, res):
    return stage.representation.render(cams, res, res, stage.shader, stage.shader.preview())


def test_refine_stage_starts_with_the_coarse_shape_and_colour(trained_coarse):
    """Issue 3 (d): right after init, DMTet silhouettes match the coarse NeRF's opacity > 0.5 (IoU >= 0.8), from
    views other than the ones the density level was chosen on."""
    cfg, coarse, _ = trained_coarse
    refine = _refine_stage(cfg, coarse)
    cams = make_cameras(
        torch.tensor([5.0, 30.0, -8.0, 20.0, 40.0, 0.0]),
        torch.tensor([17.0, 75.0, 140.0, 200.0, 260.0, 330.0]),
        torch.tensor([1.6, 1.8, 2.0, 1.7, 1.9, 1.5]),
        torch.tensor([40.0, 45.0, 50.0, 55.0, 42.0, 60.0]),
    )
    with torch.no_grad():
        nerf = _render(coarse, cams, 64).opacity[..., 0] > 0.5
        fine = _render(refine, cams, 64)
    mesh = fine.opacity[..., 0] > 0.5
    iou = ((nerf & mesh).sum() / (nerf | mesh).sum()).item()
    rep = refine.representation
    print(f"coarse->refine silhouette IoU {iou:.3f} (density level {rep.density_level.item():.3f})")
    assert nerf.float().mean() > 0.05  # there is something to match
    assert iou >= 0.8
    # Colour continues from the coarse albedo field: same weights, same colours at the mesh surface.
    assert torch.equal(rep.field.encoding.embeddings, coarse.representation.field.encoding.embeddings)
    asset = rep.asset()
    surface = asset.mesh.verts[:200]
    torch.testing.assert_close(asset.albedo(surface), coarse.representation.field.albedo(surface))


def test_sds_gradients_reach_the_mesh_and_regularisers_are_finite(trained_coarse, tiny_guidance, tmp_path):
    cfg, coarse, text = trained_coarse
    refine = _refine_stage(cfg, coarse, tiny_guidance, text)
    trainer = Trainer(refine, tmp_path / "refine-run", cfg.trainer)
    dmtet = refine.representation.dmtet
    sdf0, deform0 = dmtet.sdf.detach().clone(), dmtet.deform.detach().clone()
    _, terms = trainer.train_step()
    assert {"sds", "normal_consistency", "laplacian"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    # Adam moved the SDF and the deformation of the surface vertices (and only there: the rest has no gradient).
    moved = (dmtet.sdf.detach() - sdf0).abs() > 0
    assert 0 < int(moved.sum()) < moved.numel() // 4
    assert (dmtet.deform.detach() - deform0).abs().amax() > 0


def test_refine_checkpoint_resume_is_exact(trained_coarse, tiny_guidance, tmp_path):
    """A refine stage cancelled after a checkpoint, rebuilt (init_from, then its own checkpoint) and resumed ends
    bit-identical to an uninterrupted one: the pipeline's resume path."""
    cfg, coarse, text = trained_coarse
    cfg = dataclasses.replace(cfg, refine=dataclasses.replace(cfg.refine, steps=5))
    coarse_state = {k: v.clone() for k, v in coarse.state_dict().items()}

    def run(run_dir: Path, cancel_at: int | None) -> None:
        coarse.load_state_dict(coarse_state)
        run_dir.mkdir(exist_ok=True)
        torch.manual_seed(1)
        stage = _refine_stage(cfg, coarse, tiny_guidance, text)

        def stop(progress):
            if progress.step == cancel_at:
                raise Cancelled()

        trainer = Trainer(stage, run_dir, cfg.trainer, stop)
        trainer.resume()
        try:
            with deterministic_algorithms(True):  # as generate() does for every CPU run
                trainer.run()
        except Cancelled:
            return

    run(tmp_path / "straight", None)
    run(tmp_path / "interrupted", 3)
    ckpt = tmp_path / "interrupted" / "checkpoints" / "refine.safetensors"
    assert read_checkpoint_meta(ckpt)["step"] == 3  # the cancel checkpoint
    run(tmp_path / "interrupted", None)  # resume from step 3
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "refine.safetensors"))
    b = load_file(str(ckpt))
    assert a.keys() == b.keys()
    compared = [key for key in a if key.startswith(("model.", "optim."))]
    assert len(compared) > 5, sorted(a)  # parameters and Adam's state were compared, not nothing
    for key in compared:
        assert torch.equal(a[key], b[key]), key


def _tiny_sets(skip: tuple[str, ...]) -> list[str]:
    out = []
    for key, value in TINY_OVERRIDES.items():
        if not key.startswith(skip):
            out += ["--set", f"{key}={value}"]
    return out


def _mesh_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.suffix in (".glb", ".obj", ".ply") and p.stat().st_size > 0]


def test_cli_generate_with_refine_leaves_a_mesh(tiny_model_dir, tmp_path, capsys):
    """Issue 3 (e): the issue's command (plus tiny field/video/export sizes so the suite stays fast)."""
    argv = [
        "generate",
        "a blue vase",
        "--model",
        str(tiny_model_dir),
        "--coarse-steps",
        "20",
        "--coarse-res",
        "32",
    ]
    argv += ["--refine-steps", "10", "--refine-res", "64", "--out", str(tmp_path)]
    argv += _tiny_sets(skip=("coarse.steps", "coarse.resolution", "refine.steps", "refine.resolution"))
    assert main(argv) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["stages"]["refine"] == {"step": 10, "total": 10}
    assert _mesh_files(run_dir), sorted(p.name for p in run_dir.rglob("*"))
    assert "mesh:" in capsys.readouterr().out


def test_cli_refine_subcommand_on_a_finished_coarse_run(tiny_model_dir, tmp_path, capsys):
    argv = [
        "generate",
        "a blue vase",
        "--model",
        str(tiny_model_dir),
        "--refine-steps",
        "0",
        "--out",
        str(tmp_path),
    ]
    argv += _tiny_sets(skip=("refine.steps",))
    assert main(argv) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert not (run_dir / "checkpoints" / "refine.safetensors").exists()
    assert main(["refine", str(run_dir), "--refine-steps", "3", "--refine-res", "32"]) == 0
    meta_step = json.loads((run_dir / "run.json").read_text())["stages"]["refine"]["step"]
    assert meta_step == 3
    assert "refine:\n  steps: 3" in (run_dir / "config.yaml").read_text().replace("\r", "")
    assert _mesh_files(run_dir)
    # A run folder whose coarse stage has not finished is a one-line user error.
    (run_dir / "checkpoints" / "coarse.safetensors").unlink()
    capsys.readouterr()
    assert main(["refine", str(run_dir)]) == 2
    assert "has not finished" in capsys.readouterr().err
