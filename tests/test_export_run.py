"""``text3d export RUN_DIR`` and the export at the end of ``generate``, on tiny CPU runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from text3d.cli import main
from text3d.config import save_config
from text3d.io import write_json
from text3d.pipeline import build_stages
from text3d.training.checkpoint import read_checkpoint_meta, save_checkpoint


def glb_json(path: Path) -> dict:
    data = path.read_bytes()
    length = int.from_bytes(data[12:16], "little")
    return json.loads(data[20 : 20 + length])


@pytest.fixture
def trained_run(make_config, tmp_path) -> Path:
    """A run folder whose coarse stage is checkpointed at its initial blob (a ball the renders show)."""
    cfg = make_config("a blue marble")
    run = tmp_path / "a-blue-marble-20260101-000000-abcdef"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    write_json(
        run / "run.json", {"prompt": cfg.prompt, "seed": cfg.seed, "status": "completed", "outputs": {}}
    )
    torch.manual_seed(cfg.seed)
    stage = build_stages(cfg)[0]
    stage.representation.before_step(0)  # the occupancy grid a trained stage has
    opt = torch.optim.Adam(stage.parameter_groups())
    save_checkpoint(run / "checkpoints" / "coarse.safetensors", stage, opt, cfg.coarse.steps, {})
    return run


def test_cli_export_writes_named_meshes_and_lists_them(trained_run, capsys):
    code = main(
        ["export", str(trained_run), "--format", "glb,obj,ply", "--texture-size", "64", "--faces", "500"]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    name = trained_run.name
    mesh_dir = trained_run / "mesh"
    assert sorted(p.name for p in mesh_dir.iterdir()) == sorted(
        [f"{name}.glb", f"{name}.obj", f"{name}.mtl", f"{name}_albedo.png", f"{name}.ply"]
    )
    for suffix in (".glb", ".obj", ".ply"):
        assert f"mesh: {mesh_dir / (name + suffix)}" in out.out
    record = json.loads((trained_run / "run.json").read_text())
    assert record["outputs"]["meshes"] == [f"mesh/{name}.glb", f"mesh/{name}.obj", f"mesh/{name}.ply"]
    assert record["export"]["threshold"] > 0 and record["export"]["threshold_iou"] > 0.8
    glb = trimesh.load(mesh_dir / f"{name}.glb", force="mesh", process=False)
    assert abs(len(glb.faces) - 500) <= 10  # --faces decimated it
    assert np.ptp(glb.vertices, axis=0).max() == pytest.approx(1.0, rel=1e-4)  # 1 m, the default size
    np.testing.assert_allclose(glb.bounds.mean(axis=0), 0.0, atol=1e-5)  # centred
    assert glb_json(mesh_dir / f"{name}.glb")["asset"]["extras"]["prompt"] == "a blue marble"


def test_cli_export_empty_isosurface_is_a_one_line_error_with_no_files(trained_run, capsys):
    before = (trained_run / "run.json").read_text()
    code = main(["export", str(trained_run), "--threshold", "1e9"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: the isosurface at density 1e+09 is empty") and err.count("\n") == 1
    assert not (trained_run / "mesh").exists()
    assert (trained_run / "run.json").read_text() == before


def test_cli_export_without_a_checkpoint_or_run_is_a_clear_error(trained_run, tmp_path, capsys):
    (trained_run / "checkpoints" / "coarse.safetensors").unlink()
    assert main(["export", str(trained_run)]) == 2
    assert "no trained stage yet" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "not a text3d run folder" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--format", "fbx"]) == 2
    assert "unknown export format 'fbx'" in capsys.readouterr().err


def test_generate_exports_meshes_at_the_end(make_config, tiny_guidance):
    from text3d.pipeline import generate

    cfg = make_config(
        "a small red cube", **{"coarse__steps": "2", "refine__steps": "2", "trainer__video_frames": "2"}
    )
    result = generate(cfg, guidance=tiny_guidance)
    name = result.run_dir.name
    assert [p.name for p in result.meshes] == [f"{name}.glb", f"{name}.obj"]
    assert all(p.parent == result.run_dir / "mesh" and p.stat().st_size > 0 for p in result.meshes)
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["outputs"]["meshes"] == [f"mesh/{name}.glb", f"mesh/{name}.obj"]
    summary = record["export"]
    assert summary["error"] is None and summary["faces"] > 0
    assert (result.run_dir / "checkpoints" / "refine.safetensors").is_file()
    assert summary["threshold"] is None  # the refine stage's DMTet surface, not a density isosurface

    # Re-exporting the run gives the same surface: the refine stage is rebuilt from its checkpoint.
    from text3d.pipeline import export_run, load_run_config

    ply_only = dataclasses.replace(load_run_config(result.run_dir).export, formats=("ply",))
    again = export_run(result.run_dir, ply_only, device="cpu")
    ply = trimesh.load(again.meshes[0], process=False)
    glb = trimesh.load(result.meshes[0], force="mesh", process=False)
    assert len(ply.faces) == summary["faces"] == len(glb.faces)
    np.testing.assert_allclose(ply.bounds, glb.bounds, atol=1e-5)


def test_generate_survives_an_export_with_nothing_to_show(make_config, tiny_guidance):
    """Training finished: an empty surface is reported in run.json, not turned into a failed run."""
    from text3d.pipeline import generate

    cfg = make_config(
        "nothing",
        **{
            "coarse__steps": "1",
            "refine__steps": "0",
            "trainer__video_frames": "2",
            "export__threshold": "1e9",
        },
    )
    result = generate(cfg, guidance=tiny_guidance)
    assert result.status == "completed" and result.meshes == []
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["status"] == "completed" and "is empty" in record["export"]["error"]
    assert "meshes" not in record["outputs"]
    assert not (result.run_dir / "mesh").exists()


def test_cancel_reaches_the_turntable_and_the_export_and_the_run_resumes(make_config, tiny_guidance):
    """After a stage's last step the pipeline still reports (turntable frames, export phases), so a cancel raised by
    the callback stops those too: nothing half-written is left, run.json says cancelled, and a resume finishes."""
    from text3d.errors import Cancelled
    from text3d.pipeline import generate, resume

    cfg = make_config(
        "a small red cube", **{"coarse__steps": "2", "refine__steps": "2", "trainer__video_frames": "3"}
    )
    seen: list[tuple[str, str]] = []

    def cancel_at(text: str):
        def callback(progress):
            seen.append((progress.stage, progress.message))
            if progress.message == text:
                raise Cancelled()

        return callback

    run_dir = cfg.out_dir
    with pytest.raises(Cancelled):
        generate(cfg, guidance=tiny_guidance, callback=cancel_at("rendering the turntable, frame 2 / 3"))
    (run,) = Path(run_dir).iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "cancelled"
    assert not (run / "video").exists()  # frame 1 was rendered; no video file until all frames exist
    assert read_checkpoint_meta(run / "checkpoints" / "coarse.safetensors")["step"] == 2
    assert seen[-1] == ("coarse", "rendering the turntable, frame 2 / 3")

    seen.clear()
    with pytest.raises(Cancelled):
        resume(run, guidance=tiny_guidance, callback=cancel_at("exporting the mesh: bake"))
    assert ("coarse", "") not in seen  # the coarse stage had finished: not trained again
    assert seen.count(("refine", "")) == 2  # the fine stage trained its 2 steps
    assert [m for _, m in seen if m.startswith("exporting")] == [
        "exporting the mesh: surface",
        "exporting the mesh: clean",
        "exporting the mesh: unwrap",
        "exporting the mesh: bake",
    ]
    assert json.loads((run / "run.json").read_text())["status"] == "cancelled"
    assert sorted(p.name for p in (run / "video").iterdir()) == [
        "coarse-turntable.mp4",
        "refine-turntable.mp4",
    ]
    assert not (run / "mesh").exists() or not any((run / "mesh").iterdir())

    result = resume(run, guidance=tiny_guidance, callback=cancel_at("never"))
    assert result.status == "completed" and [p.suffix for p in result.meshes] == [".glb", ".obj"]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
