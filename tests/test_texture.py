"""``text3d texture``: a given mesh textured from a prompt, from posed photos, or from one concept image.

What is checked against something text3d did not compute: the input files (vertices, faces, face order and UVs
of the outputs equal the inputs'), Blender Cycles' unlit renders of a mesh with a known texture (held-out PSNR and
the recovered texture against the true one), the Khronos glTF validator, and the concept image itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from conftest import needs_blender
from test_export_validator import validate
from texture_meshes import bumpy_sphere, covered_texels, emission_scene, write_glb, write_obj

from text3d.cli import main
from text3d.data.meshfile import InputMesh, MeshInputError, read_mesh


@pytest.fixture
def fast(tiny_model_dir):
    return [
        f"--model={tiny_model_dir}",
        "--steps=12",
        "--res=32",
        "--texture-size=64",
        "--device=cpu",
        "--set=model.local_files_only=true",
        "--set=trainer.progress_bar=false",
        "--set=trainer.video_frames=4",
        "--set=trainer.preview_every=2",
        "--set=trainer.checkpoint_every=2",
        "--set=trainer.log_every=2",
    ]


def outputs(out: Path) -> tuple[Path, Path, Path]:
    (run,) = list(out.iterdir())
    mesh = run / "mesh"
    return run, next(mesh.glob("*.glb")), next(mesh.glob("*.obj"))


def assert_same_corners(got: InputMesh, want: InputMesh) -> None:
    """Face ``i`` of ``got`` has the positions (float32) and UVs of face ``i`` of ``want``, corner for corner:
    same faces, same order, whatever the vertex numbering (a GLB splits vertices at UV seams)."""
    assert got.faces.shape == want.faces.shape
    np.testing.assert_array_equal(
        got.positions.astype(np.float32)[got.faces], want.positions.astype(np.float32)[want.faces]
    )
    np.testing.assert_allclose(got.uvs[got.face_uvs], want.uvs[want.face_uvs], atol=1e-7)


def assert_texture_not_constant(png_dir: Path) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(next(png_dir.glob("*_albedo.png"))).convert("RGB"), np.float32) / 255.0
    assert img.reshape(-1, 3).std(axis=0).max() > 0.01, "the texture is constant"
    return img


# ------------------------------------------------------------------------------------------ (b) + (c): prompt
def test_obj_input_keeps_vertices_faces_order_and_uvs_and_writes_a_valid_glb(tmp_path, fast, capsys):
    src = write_obj(tmp_path / "sphere.obj", *bumpy_sphere())
    out = tmp_path / "out"
    code = main(["texture", str(src), "--prompt", "a red ball", f"--out={out}", *fast])
    assert code == 0, capsys.readouterr().err
    run, glb, obj = outputs(out)
    want = read_mesh(src)
    got_obj = read_mesh(obj)
    # OBJ: the very same vertex list, faces and UV indices (the seam keeps shared positions, separate UVs)
    np.testing.assert_array_equal(got_obj.positions.astype(np.float32), want.positions.astype(np.float32))
    np.testing.assert_array_equal(got_obj.faces, want.faces)
    np.testing.assert_array_equal(got_obj.face_uvs, want.face_uvs)
    np.testing.assert_array_equal(got_obj.uvs.astype(np.float32), want.uvs.astype(np.float32))
    # GLB: split at the seam (glTF has one index per corner) but corner for corner the same faces in order
    got_glb = read_mesh(glb)
    assert got_glb.positions.shape[0] > want.positions.shape[0]  # the seam's vertices were split
    assert_same_corners(got_glb, want)
    # the comparison does catch a change of face order
    swapped = InputMesh(
        got_glb.positions, got_glb.faces[[1, 0, *range(2, len(got_glb.faces))]], got_glb.uvs, None
    )
    swapped.face_uvs = swapped.faces
    with pytest.raises(AssertionError):
        assert_same_corners(swapped, want)
    report = validate(glb)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:3]
    assert report["info"]["totalTriangleCount"] == len(want.faces) and report["info"]["hasTextures"]
    assert_texture_not_constant(run / "mesh")
    assert (run / "video" / "texture-turntable.mp4").is_file() and (run / "previews" / "latest.png").is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["mode"] == "prompt"


def test_glb_scene_of_two_meshes_is_merged_with_its_transforms_and_kept_vertex_for_vertex(tmp_path, fast):
    pos, faces, uv, fuv = bumpy_sphere(12, 24)
    src = write_glb(tmp_path / "parts.glb", pos, faces, uv, fuv, parts=2)
    want = read_mesh(src)
    # merged in the scene's world frame: the node translations undo the per-part shifts
    np.testing.assert_allclose(want.positions[want.faces], pos[faces], atol=1e-6)
    out = tmp_path / "out"
    assert main(["texture", str(src), "--prompt", "a blue ball", f"--out={out}", *fast]) == 0
    run, glb, obj = outputs(out)
    got = read_mesh(glb)
    np.testing.assert_array_equal(got.positions.astype(np.float32), want.positions.astype(np.float32))
    np.testing.assert_array_equal(got.faces, want.faces)
    np.testing.assert_allclose(got.uvs, want.uvs, atol=1e-7)
    assert_same_corners(read_mesh(obj), want)
    assert validate(glb)["issues"]["numErrors"] == 0
    assert_texture_not_constant(run / "mesh")


def test_mesh_without_uvs_is_unwrapped_without_touching_its_faces(tmp_path, fast):
    pos, faces, _, _ = bumpy_sphere(16, 24)  # lat-long triangles: far from equilateral
    src = tmp_path / "ball.ply"
    trimesh.Trimesh(pos * [1.0, 1.5, 1.0], faces, process=False).export(src)
    want = read_mesh(src)
    assert not want.has_uvs
    out = tmp_path / "out"
    assert main(["texture", str(src), "--prompt", "a stone", f"--out={out}", *fast]) == 0
    _, _, obj = outputs(out)
    got = read_mesh(obj)
    np.testing.assert_array_equal(got.positions.astype(np.float32), want.positions.astype(np.float32))
    np.testing.assert_array_equal(got.faces, want.faces)
    # each face's UV triangle belongs to that face, corner for corner: xatlas' charts are near-isometric, so
    # the three UV edge lengths are proportional to the 3D ones (a rotated corner order would break this)
    e3 = np.linalg.norm(got.positions[got.faces] - np.roll(got.positions[got.faces], -1, axis=1), axis=-1)
    e2 = np.linalg.norm(got.uvs[got.face_uvs] - np.roll(got.uvs[got.face_uvs], -1, axis=1), axis=-1)
    ratio = e2 / e3
    spread = ratio.std(axis=1) / ratio.mean(axis=1)
    wrong = e2[:, [1, 2, 0]] / e3
    wrong_spread = wrong.std(axis=1) / wrong.mean(axis=1)
    print(
        f"UV / 3D edge-length spread: {np.median(spread):.4f} (a wrong corner order: {np.median(wrong_spread):.4f})"
    )
    assert np.median(spread) < 0.05
    assert np.median(wrong_spread) > 0.2  # the check does see a wrong rotation


# --------------------------------------------------------------------------------------------- (e) bad input
def _not_a_mesh(d: Path) -> Path:
    p = d / "photo.glb"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return p


def _point_cloud(d: Path) -> Path:
    p = d / "cloud.ply"
    trimesh.PointCloud(np.random.default_rng(0).random((100, 3))).export(p)
    return p


def _no_faces(d: Path) -> Path:
    p = d / "verts.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    return p


def _nan_vertex(d: Path) -> Path:
    p = d / "nan.obj"
    p.write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n")
    return p


def _overlapping_uvs(d: Path) -> Path:
    pos, faces, uv, fuv = bumpy_sphere(6, 12)
    uv = uv * 3.0 - 1.0  # a tiled layout: leaves [0, 1] and wraps onto itself
    return write_obj(d / "tiled.obj", pos, faces, uv, fuv)


def _five_million_faces(d: Path) -> Path:
    n_f = 5_000_000
    p = d / "huge.ply"
    header = (
        "ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        f"property float z\nelement face {n_f}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    face = np.zeros(n_f, dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"] = 3
    face["i"] = (0, 1, 2)
    p.write_bytes(header.encode() + np.eye(3, dtype="<f4").tobytes() + face.tobytes())
    return p


@pytest.mark.parametrize(
    "make, message",
    [
        (_not_a_mesh, "not a mesh"),
        (_point_cloud, "point cloud"),
        (_no_faces, "no faces"),
        (_nan_vertex, "NaN"),
        (_overlapping_uvs, "overlap"),
        (_five_million_faces, "5,000,000 faces is over the limit of 2,000,000 faces"),
    ],
)
def test_bad_mesh_input_is_one_line_exit_2_and_writes_nothing(tmp_path, fast, capsys, make, message):
    src = make(tmp_path)
    out = tmp_path / "out"
    code = main(["texture", str(src), "--prompt", "a vase", f"--out={out}", *fast])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not out.exists() or not any(out.iterdir())


def test_reader_accepts_the_good_versions_of_those_inputs(tmp_path):
    """The checks above refuse the bad inputs only: the same shapes done right pass."""
    pos, faces, uv, fuv = bumpy_sphere(6, 12)
    assert read_mesh(write_obj(tmp_path / "ok.obj", pos, faces, uv, fuv)).has_uvs
    with pytest.raises(MeshInputError, match="over the limit of 100 faces"):
        read_mesh(tmp_path / "ok.obj", max_faces=100)


# --------------------------------------------------------------------------------- (c) concept image + prompt
def test_concept_image_is_matched_in_the_front_view(tmp_path, tiny_model_dir):
    from PIL import Image

    from text3d.config import apply_overrides
    from text3d.recipes.texture import TextureConfig
    from text3d.scenes.spec import TextureSpec, noise_texture
    from text3d.texturing import texture

    src = write_obj(tmp_path / "sphere.obj", *bumpy_sphere(16, 32))
    concept = tmp_path / "concept.png"
    Image.fromarray(noise_texture(TextureSpec(kind="noise", size=64, seed=5))).save(concept)
    cfg = apply_overrides(
        TextureConfig(),
        {
            "mesh": str(src),
            "image": str(concept),
            "prompt": "a painted ball",
            "model.model_id": str(tiny_model_dir),
            "model.local_files_only": "true",
            "steps": "120",
            "resolution": "48",
            "colour.texture_size": "128",
            "device": "cpu",
            "out_dir": str(tmp_path / "out"),
            "trainer.progress_bar": "false",
            "trainer.video_frames": "4",
            "trainer.preview_every": "1000",
            "trainer.checkpoint_every": "1000",
        },
    )
    result = texture(cfg)
    match = json.loads((result.run_dir / "concept.json").read_text())
    print(f"concept view: {match}")
    assert match["pixels"] > 500
    assert match["psnr_in_silhouette"] >= 25.0


# ----------------------------------------------------------------------------------------------------- resume
def test_a_killed_run_resumes_to_the_same_texture(tmp_path, tiny_model_dir):
    from text3d.config import apply_overrides
    from text3d.errors import Cancelled
    from text3d.recipes.texture import TextureConfig
    from text3d.texturing import load_texture_config, texture

    src = write_obj(tmp_path / "sphere.obj", *bumpy_sphere(8, 16))
    base = {
        "mesh": str(src),
        "prompt": "a wooden ball",
        "model.model_id": str(tiny_model_dir),
        "model.local_files_only": "true",
        "steps": "6",
        "resolution": "32",
        "colour.colour": "field",
        "export.texture_size": "32",
        "device": "cpu",
        "trainer.progress_bar": "false",
        "trainer.video_frames": "2",
        "trainer.preview_every": "1000",
        "trainer.checkpoint_every": "2",
    }
    straight = texture(apply_overrides(TextureConfig(), {**base, "out_dir": str(tmp_path / "a")}))

    def kill(progress):
        if progress.step == 3 and not progress.message:
            raise Cancelled()

    with pytest.raises(Cancelled):
        texture(apply_overrides(TextureConfig(), {**base, "out_dir": str(tmp_path / "b")}), callback=kill)
    (run,) = list((tmp_path / "b").iterdir())
    assert json.loads((run / "run.json").read_text())["status"] == "cancelled"
    assert not (run / "mesh").exists()
    assert load_texture_config(run).mesh == str(src)
    assert main(["texture", "--resume", str(run)]) == 0  # the CLI's resume: the run's own config.yaml

    def png(run_dir: Path) -> bytes:
        return next((run_dir / "mesh").glob("*_albedo.png")).read_bytes()

    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert png(run) == png(straight.run_dir)


# ------------------------------------------------------------------------------------ (a) from photos, exact
@needs_blender
@pytest.mark.slow
def test_texture_from_cycles_photos_reaches_30_db_held_out_and_28_db_on_the_texture(tmp_path, capsys):
    from PIL import Image

    from text3d.data.load import load_photo_set
    from text3d.metrics import psnr
    from text3d.recipes import texture as recipe
    from text3d.recipes.texture import TextureConfig
    from text3d.texturing import load_kept

    data, obj, truth = emission_scene(128)
    out = tmp_path / "out"
    code = main(
        [
            "texture",
            str(obj),
            f"--images={data.path}",
            "--steps=300",
            "--texture-size=256",
            "--device=cpu",
            f"--out={out}",
            "--set=views.images_per_step=2",
            "--set=trainer.progress_bar=false",
            "--set=trainer.video_frames=4",
            "--set=trainer.preview_every=1000",
            "--set=trainer.checkpoint_every=1000",
        ]
    )
    assert code == 0, capsys.readouterr().err
    run, glb, objfile = outputs(out)
    held_out = json.loads((run / "metrics.json").read_text())
    # the texture image against the true one, on the texels the 24 training views cover
    cfg = TextureConfig(mesh=str(obj), images=str(data.path))
    photos = load_photo_set(data.path, bound=cfg.bound, margin=cfg.margin, holdout=cfg.holdout)
    kept = load_kept(run / "input_mesh.npz")
    (stage,) = recipe.build_stages(
        cfg,
        torch.as_tensor(recipe.apply_frame(recipe.photo_frame(photos), kept.positions), dtype=torch.float32),
        torch.as_tensor(kept.faces),
        torch.as_tensor(kept.corner_uvs(), dtype=torch.float32),
        photos=photos,
    )
    got = np.asarray(Image.open(next((run / "mesh").glob("*_albedo.png"))).convert("RGB"), np.float32) / 255
    cover = covered_texels(stage, got.shape[0])
    true = truth.astype(np.float32) / 255.0
    tex_psnr = psnr(torch.from_numpy(got[cover]), torch.from_numpy(true[cover]))
    flat = psnr(
        torch.from_numpy(np.full_like(true[cover], true[cover].mean(0))), torch.from_numpy(true[cover])
    )
    print(
        f"held-out {held_out['views']} views: {held_out['psnr']:.2f} dB; texture on {cover.mean():.0%} covered "
        f"texels: {tex_psnr:.2f} dB (a flat mean colour scores {flat:.2f} dB)"
    )
    assert held_out["views"] == 8 and held_out["psnr"] >= 30.0
    assert tex_psnr >= 28.0 and cover.mean() > 0.5
    assert_same_corners(read_mesh(objfile), read_mesh(obj))
