"""Exported assets look like the field they came from and face the right way (issue 4, acceptance c and d)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from export_fields import detailed_albedo, wavy_albedo

from text3d.cameras import turntable_cameras
from text3d.export.exporter import ExportConfig, export_density, export_mesh
from text3d.render.raster import interpolate, rasterize, texture


def _clip(verts: torch.Tensor, cams) -> torch.Tensor:
    homo = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1)
    return homo[None] @ cams.mvp().transpose(1, 2)  # [B, V, 4]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10.0 * np.log10(1.0 / np.mean((a - b) ** 2)))


def test_bake_fidelity_textured_mesh_matches_field_from_8_views(tmp_path):
    """Render the exported GLB with its texture and the albedo field itself on the same surface: >= 30 dB."""
    torus = trimesh.creation.torus(major_radius=0.45, minor_radius=0.18, major_sections=96, minor_sections=48)
    verts = np.asarray(torus.vertices, np.float32) @ np.array(
        [[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float32
    )  # stand it up so the views see the hole
    cfg = ExportConfig(formats=("glb",), texture_size=1024, target_faces=0)
    result = export_mesh(verts, torus.faces, detailed_albedo, tmp_path, "torus", cfg)

    glb = trimesh.load(tmp_path / "torus.glb", force="mesh", process=False)
    pos = torch.as_tensor(np.asarray(glb.vertices), dtype=torch.float32)
    tri = torch.as_tensor(np.asarray(glb.faces), dtype=torch.long)
    uv_gl = torch.as_tensor(np.asarray(glb.visual.uv), dtype=torch.float32)
    tex_uv = torch.stack(
        [uv_gl[:, 0], 1.0 - uv_gl[:, 1]], dim=-1
    )  # rows top first, as the rasterizer's texture
    tex = torch.as_tensor(np.array(glb.visual.material.baseColorTexture.convert("RGB")), dtype=torch.float32)
    tex = tex[None] / 255.0
    field_pos = torch.as_tensor(
        result.placement.invert(np.asarray(glb.vertices))
    )  # back to the field's frame

    cams = turntable_cameras(8, elevation_deg=25.0, distance=1.6, fovy_deg=50.0)
    res = 192
    rast = rasterize(_clip(pos, cams), tri, (res, res))
    mask = rast.rast[..., 3] > 0  # [8, H, W]
    textured = texture(tex, interpolate(tex_uv, rast, tri), boundary_mode="clamp")
    reference = detailed_albedo(interpolate(field_pos, rast, tri)[mask])
    values = []
    for view in range(8):
        m = mask[view]
        assert m.float().mean() > 0.1  # the asset fills the view
        ref_view = detailed_albedo(interpolate(field_pos, rast, tri)[view][m])
        values.append(psnr(textured[view][m].numpy(), ref_view.numpy()))
    overall = psnr(textured[mask].numpy(), reference.numpy())
    print(
        f"bake fidelity PSNR over 8 views: {overall:.1f} dB (per view {', '.join(f'{v:.1f}' for v in values)})"
    )
    assert min(values) >= 30.0, values


def test_bake_fidelity_detects_a_wrong_texture(tmp_path):
    """The PSNR check has teeth: the same comparison against a texture flipped upside down fails badly."""
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    cfg = ExportConfig(formats=("glb",), texture_size=128, target_faces=0, size=0.0, center="none")
    export_mesh(np.asarray(ball.vertices, np.float32), ball.faces, wavy_albedo, tmp_path, "ball", cfg)
    glb = trimesh.load(tmp_path / "ball.glb", force="mesh", process=False)
    pos = torch.as_tensor(np.asarray(glb.vertices), dtype=torch.float32)
    tri = torch.as_tensor(np.asarray(glb.faces), dtype=torch.long)
    uv_gl = torch.as_tensor(np.asarray(glb.visual.uv), dtype=torch.float32)
    tex = torch.as_tensor(np.array(glb.visual.material.baseColorTexture.convert("RGB")), dtype=torch.float32)
    cams = turntable_cameras(2, distance=1.6)
    rast = rasterize(_clip(pos, cams), tri, (96, 96))
    mask = rast.rast[..., 3] > 0
    ref = wavy_albedo(interpolate(pos, rast, tri)[mask]).numpy()
    right = torch.stack([uv_gl[:, 0], 1.0 - uv_gl[:, 1]], dim=-1)
    good = texture(tex[None] / 255.0, interpolate(right, rast, tri), boundary_mode="clamp")[mask].numpy()
    bad = texture(tex.flip(0)[None] / 255.0, interpolate(right, rast, tri), boundary_mode="clamp")[
        mask
    ].numpy()
    assert psnr(good, ref) > 30.0
    assert psnr(bad, ref) < 20.0


def test_marked_front_faces_plus_z_in_the_glb(tmp_path):
    """An asset with a nose on the side the azimuth-0 training camera looks at, and a bump on top, exported from
    its density: in the GLB the nose points to +Z and the bump to +Y (glTF's front and up)."""
    cam = turntable_cameras(1, elevation_deg=0.0)
    front = torch.nn.functional.normalize(cam.positions[0], dim=0)  # where the front-view camera sits
    up = cam.c2w[0, :3, 1]  # the camera's up

    def ball(x, centre, radius):
        return torch.sigmoid(40.0 * (radius - (x - centre).norm(dim=-1)))

    def density(x):
        body = ball(x, torch.zeros(3), 0.35)
        nose = ball(x, 0.38 * front, 0.12)
        hat = ball(x, 0.36 * up, 0.08)
        return 60.0 * torch.maximum(body, torch.maximum(nose, hat))

    def albedo(x):
        red = ((x @ front) > 0.2).float()[:, None]
        return red * torch.tensor([0.9, 0.1, 0.1]) + (1 - red) * torch.tensor([0.2, 0.3, 0.8])

    cfg = ExportConfig(formats=("glb",), texture_size=128, grid_resolution=64, threshold_resolution=32)
    result = export_density(density, albedo, 1.0, tmp_path, "marked", cfg, n_samples=48)
    glb = trimesh.load(tmp_path / "marked.glb", force="mesh", process=False)
    v = np.asarray(glb.vertices)
    d = v - result.placement.apply(np.zeros((1, 3)))  # offsets from where the body's centre went
    tip = d[np.argmax(np.linalg.norm(d, axis=1))]
    tip = tip / np.linalg.norm(tip)
    assert tip @ np.array([0.0, 0.0, 1.0]) > 0.9, f"the nose points to {tip}, not +Z"

    def reach(axis):
        cone = (d @ axis) > 0.8 * np.linalg.norm(d, axis=1)
        return (d[cone] @ axis).max() if cone.any() else 0.0

    ey = np.array([0.0, 1.0, 0.0])
    assert reach(ey) > reach(-ey) + 0.03, "the bump on top is not at +Y"
    assert reach(ey) > reach(np.array([1.0, 0.0, 0.0])) + 0.03
    # The red front is on the +Z side of the texture, too.
    tex = np.asarray(glb.visual.material.baseColorTexture.convert("RGB")).astype(float) / 255
    uv = np.asarray(glb.visual.uv)
    colour = tex[
        np.clip(((1 - uv[:, 1]) * 128).astype(int), 0, 127), np.clip((uv[:, 0] * 128).astype(int), 0, 127)
    ]
    front_side = d[:, 2] > 0.5 * d[:, 2].max()
    back_side = d[:, 2] < 0.5 * d[:, 2].min()
    assert (colour[front_side, 0] > 0.7).mean() > 0.9
    assert (colour[back_side, 2] > 0.6).mean() > 0.9


@pytest.mark.parametrize("center", ["center", "ground"])
def test_marked_front_survives_every_placement(tmp_path, center):
    """Placement only scales and translates: the front stays +Z whatever the centring."""
    nose = trimesh.creation.cone(radius=0.1, height=0.6)  # apex at +Z, 0.6 from the centre
    body = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    mesh = trimesh.util.concatenate([body, nose])
    cfg = ExportConfig(
        formats=("glb",), texture_size=64, target_faces=0, center=center, min_component_fraction=0
    )
    export_mesh(np.asarray(mesh.vertices, np.float32), mesh.faces, wavy_albedo, tmp_path, "m", cfg)
    v = np.asarray(trimesh.load(tmp_path / "m.glb", force="mesh", process=False).vertices)
    apex = v[np.argmax(v[:, 2])]
    assert abs(apex[0]) < 1e-3  # on the axis, at the front
    assert apex[2] - v[:, 2].min() == pytest.approx(1.0, rel=1e-3)  # z extent 0.9 scaled to 1 m
    assert (v[:, 2].max() - v[:, 2].min()) > (v[:, 0].max() - v[:, 0].min())
