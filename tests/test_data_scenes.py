"""Blender Cycles renders known scenes; the loader reads them back; the conventions are checked against Blender.

The independent fact: Cycles' alpha is the true mesh's silhouette from Blender's cameras. The loader's cameras
(Z-up -> Y-up frame, normalisation, intrinsics from ``camera_angle_x``) plus text3d's own projection
(``Cameras.mvp``) and rasterizer must reproduce it. Renders are cached by scene hash (``TEXT3D_SCENE_CACHE`` or
~/.cache/text3d/scenes), so only the first run pays for Blender (about 10 s per scene on 2 cores).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import trimesh
from conftest import needs_blender

from text3d.data import Z_UP_TO_Y_UP, load_photo_set
from text3d.render.raster import rasterize
from text3d.scenes import (
    CameraRigSpec,
    MaterialSpec,
    MeshSpec,
    RenderSpec,
    SceneRenderError,
    SceneSpec,
    TextureSpec,
    WorldSpec,
    main,
    render_dataset,
)

pytestmark = needs_blender

SUZANNE = SceneSpec(
    mesh=MeshSpec(source="suzanne", size=1.6),
    material=MaterialSpec(texture=TextureSpec(kind="checker")),
    world=WorldSpec(kind="sky"),
    cameras=CameraRigSpec(n_train=6, n_test=2, distance=3.0, fov_deg=40.0),
    render=RenderSpec(width=64, height=64, samples=16),
)


def silhouette_iou(photos, mesh_path) -> torch.Tensor:
    """Per-view IoU of the rendered alpha (> 0.5) and the true mesh rasterized with the loaded cameras."""
    mesh = trimesh.load(mesh_path, process=False)
    v = (
        torch.tensor(mesh.vertices, dtype=torch.float64) @ torch.tensor(Z_UP_TO_Y_UP[:3, :3]).T
    )  # file is Z up
    v = photos.normalization.apply_points(v).float()
    mvp = photos.cameras().mvp(aspect=photos.width / photos.height, near=0.01)
    clip = torch.cat([v, torch.ones(len(v), 1)], 1) @ mvp.transpose(1, 2)
    sil = (
        rasterize(clip, torch.tensor(mesh.faces), (photos.height, photos.width), backend="torch").mask[..., 0]
        > 0
    )
    alpha = photos.masks[..., 0] > 0.5
    return (sil & alpha).sum((1, 2)) / (sil | alpha).sum((1, 2))


def test_cycles_render_loads_back_with_matching_silhouettes():
    t0 = time.perf_counter()
    first = render_dataset(SUZANNE)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = render_dataset(SUZANNE)
    t_again = time.perf_counter() - t0
    assert again.cached and again.path == first.path and t_again < 1.0
    photos = load_photo_set(first.path)
    assert photos.format == "blender" and photos.counts() == {"train": 6, "val": 0, "test": 2}
    assert photos.images.shape == (8, 64, 64, 3) and photos.masks is not None
    assert 0.05 < float(photos.masks.mean()) < 0.6  # the object is in view and not filling it
    iou = silhouette_iou(photos, first.mesh_path)
    print(
        f"\nrender {t_first:.1f} s (cached: {first.cached}), cached call {t_again * 1e3:.1f} ms, IoU {iou.tolist()}"
    )
    assert float(iou.min()) >= 0.95
    # the true mesh, normalised, sits inside the field's bound
    v = (
        torch.tensor(trimesh.load(first.mesh_path, process=False).vertices)
        @ torch.tensor(Z_UP_TO_Y_UP[:3, :3]).T
    )
    assert float(photos.normalization.apply_points(v).abs().max()) < 1.0


def test_unlit_colour_is_the_srgb_of_the_emission(tmp_path):
    """Emission shader + "Standard" view transform: interior pixels equal sRGB(linear colour), which is the colour
    space PhotoSet.images claims to hold."""
    colour = (0.2, 0.5, 0.8)  # linear
    spec = SceneSpec(
        mesh=MeshSpec(source="cube", size=1.0),
        material=MaterialSpec(kind="emission", base_color=colour, texture=None),
        world=WorldSpec(kind="color", color=(0.0, 0.0, 0.0)),
        cameras=CameraRigSpec(n_train=3, n_test=0, distance=3.0),
        render=RenderSpec(width=32, height=32, samples=4),
    )
    photos = load_photo_set(render_dataset(spec, cache_dir=tmp_path).path)
    lin = np.asarray(colour)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    inside = photos.masks[..., 0] > 0.999
    got = photos.images[inside].mean(0).numpy()
    np.testing.assert_allclose(got, srgb, atol=2 / 255)


def test_render_dataset_cli(tmp_path, capsys):
    out = tmp_path / "set"
    args = ["cube", "--views", "3", "--test-views", "1", "--resolution", "24x16", "--samples", "2"]
    assert main([*args, "--out", str(out)]) == 0  # default cache: rendered once per machine
    assert (out / "transforms_train.json").is_file() and (out / "test" / "r_0.png").is_file()
    photos = load_photo_set(out)
    assert (photos.width, photos.height) == (24, 16) and len(photos) == 4
    assert main(["no_such_mesh.obj", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: mesh") and "\n" not in err
    assert main(["cube", "--world", "1,2", "--cache-dir", str(tmp_path / "cache")]) == 2


def test_bad_scene_descriptions_fail_before_blender():
    with pytest.raises(SceneRenderError, match="neither a file nor a primitive"):
        render_dataset(SceneSpec(mesh=MeshSpec(source="teapot")))
    with pytest.raises(SceneRenderError, match="texture file"):
        render_dataset(SceneSpec(material=MaterialSpec(texture=TextureSpec(kind="file", path="/nope.png"))))
