"""``fit --materials pbr`` and ``relight``: bad input gives one line and exit code 2; a tiny PBR fit exports a
relightable GLB (metallicRoughnessTexture, factors 1) and its environment .hdr, listed in run.json."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from text3d.cli import main
from text3d.config import save_config
from text3d.hdr import write_hdr
from text3d.recipes.fit import FitConfig
from text3d.scenes.render import render_dataset
from text3d.scenes.spec import CameraRigSpec, MaterialSpec, MeshSpec, RenderSpec, SceneSpec, WorldSpec


@pytest.fixture(scope="module")
def tiny_scene():
    spec = SceneSpec(
        mesh=MeshSpec("uv_sphere", size=1.0, smooth=True),
        material=MaterialSpec(base_color=(0.7, 0.25, 0.1), texture=None, roughness=0.5, metallic=0.0),
        world=WorldSpec(kind="sky"),
        cameras=CameraRigSpec(n_train=4, n_test=0, distance=3.0, fov_deg=30.0),
        render=RenderSpec(64, 64, samples=16, threads=1),
    )
    return render_dataset(spec).path  # the same scene tests/test_pbr.py renders (cached)


def one_line_exit_2(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_materials_need_a_mesh_stage(tiny_scene, capsys, tmp_path):
    err = one_line_exit_2(
        capsys, ["fit", str(tiny_scene), "--materials", "pbr", "--refine-steps", "0", "--out", str(tmp_path)]
    )
    assert "needs a mesh" in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("kind", ["not-hdr", "aspect", "missing"])
def test_fit_env_bad_file(tiny_scene, capsys, tmp_path, kind):
    path = tmp_path / "light.hdr"
    if kind == "not-hdr":
        path.write_text("P3\n1 1\n255\n0 0 0\n")
    elif kind == "aspect":
        write_hdr(path, np.ones((8, 12, 3), np.float32))
    argv = ["fit", str(tiny_scene), "--materials", "pbr", "--env", str(path), "--out", str(tmp_path / "o")]
    err = one_line_exit_2(capsys, argv)
    assert {"not-hdr": "not a Radiance", "aspect": "twice the height", "missing": "not found"}[kind] in err


def test_env_without_materials(tiny_scene, capsys, tmp_path):
    path = write_hdr(tmp_path / "light.hdr", np.ones((8, 16, 3), np.float32))
    err = one_line_exit_2(capsys, ["fit", str(tiny_scene), "--env", str(path), "--out", str(tmp_path / "o")])
    assert "--materials pbr" in err


def test_relight_bad_runs(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    err = one_line_exit_2(capsys, ["relight", str(run)])
    assert "not a text3d run folder" in err
    save_config(FitConfig(data=str(tmp_path)), run / "config.yaml")
    err = one_line_exit_2(capsys, ["relight", str(run)])
    assert "no materials to relight" in err
    bad = write_hdr(tmp_path / "bad.hdr", np.ones((8, 8, 3), np.float32))
    err = one_line_exit_2(capsys, ["relight", str(run), "--env", str(bad)])
    assert "twice the height" in err


def glb_json(path) -> dict:
    data = path.read_bytes()
    (length,) = struct.unpack_from("<I", data, 12)
    return json.loads(data[20 : 20 + length])


@pytest.mark.parametrize(
    "representation, refine_steps",
    [("nerf", 2), ("sdf", 0), ("sdf", 2)],
    ids=["nerf-dmtet", "sdf", "sdf-dmtet"],
)
def test_tiny_pbr_fit_exports_relightable_asset(tiny_scene, tmp_path, capsys, representation, refine_steps):
    """Materials on the DMTet mesh (from a NeRF or an SDF) or directly on the SDF's zero level."""
    sets = [
        "coarse.rays_per_step=256",
        "coarse.nerf.encoding.n_levels=8",
        "coarse.nerf.encoding.log2_hashmap_size=14",
        "coarse.renderer.n_samples=32",
        "refine.dmtet.resolution=32",
        "refine.init_views=4",
        "refine.init_resolution=16",
        "export.texture_size=64",
        "trainer.progress_bar=false",
        "trainer.video_frames=2",
        "holdout=4",
        "material.pbr.environment.height=8",
        "coarse.sdf.field.encoding.n_levels=8",
        "coarse.sdf.field.encoding.log2_hashmap_size=14",
        "coarse.sdf.field.hidden_dim=16",
        "coarse.sdf.eikonal_points=256",
        "coarse.sdf.mesh_resolution=32",
    ]
    argv = [
        "fit",
        str(tiny_scene),
        "--representation",
        representation,
        "--materials",
        "pbr",
        "--coarse-steps",
        "6",
        "--refine-steps",
        str(refine_steps),
        "--material-steps",
        "3",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    ]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0, capsys.readouterr().err
    (run,) = list(tmp_path.iterdir())
    record = json.loads((run / "run.json").read_text())
    stages = {"coarse": 6, "materials": 3} | ({"refine": refine_steps} if refine_steps else {})
    assert {k: v["step"] for k, v in record["stages"].items()} == stages
    env = run / record["outputs"]["environment"]
    assert env.name.endswith("_environment.hdr") and env.is_file()
    glb = next(run / p for p in record["outputs"]["meshes"] if p.endswith(".glb"))
    doc = glb_json(glb)
    pbr = doc["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicRoughnessTexture"] == {"index": 1, "texCoord": 0}
    assert pbr["metallicFactor"] == 1.0 and pbr["roughnessFactor"] == 1.0
    mtl = next(run.glob("mesh/*.mtl")).read_text()
    assert "map_Pr" in mtl and "map_Pm" in mtl
    # relight: the learned light and a given one
    assert main(["relight", str(run), "--frames", "2", "--res", "32"]) == 0
    assert main(["relight", str(run), "--env", str(env), "--frames", "2", "--res", "32"]) == 0
    assert list((run / "relight").glob("*-000.png"))
