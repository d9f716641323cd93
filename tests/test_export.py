"""Mesh export: round trips through trimesh, file safety, clean-up, placement, the automatic threshold, and
empty geometry. Everything here uses analytic fields and small meshes, so it runs in seconds on CPU."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import trimesh
from export_fields import sphere_density, wavy_albedo
from PIL import Image
from uv_checks import charts as uv_charts
from uv_checks import check_uvs

from text3d.errors import ExportError
from text3d.export.exporter import ExportConfig, export_density, export_mesh, parse_formats
from text3d.export.mesh import clean_mesh, decimate, orient_outward, placement
from text3d.export.texture import dilate, unwrap
from text3d.export.writers import obj_file_names, staged_files
from text3d.geometry.isosurface import auto_threshold, ray_densities, threshold_from_rays


@pytest.fixture(scope="module")
def ball():
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    return np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int64)


def _files(folder) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# ------------------------------------------------------------------------------------------------ (a) round trip
def test_glb_and_obj_round_trip_keep_vertices_uvs_and_pixels(ball, tmp_path):
    verts, faces = ball
    cfg = ExportConfig(formats=("glb", "obj", "ply"), texture_size=128, target_faces=0)
    result = export_mesh(verts, faces, wavy_albedo, tmp_path, "ball", cfg)
    names = {p.name for p in result.files}
    assert names == {"ball.glb", "ball.obj", "ball.mtl", "ball_albedo.png", "ball.ply"}

    png = np.asarray(Image.open(tmp_path / "ball_albedo.png"))
    assert png.shape == (128, 128, 3)

    glb = trimesh.load(tmp_path / "ball.glb", force="mesh", process=False)
    obj = trimesh.load(tmp_path / "ball.obj", process=False, maintain_order=True)
    for mesh in (glb, obj):
        assert len(mesh.vertices) == result.n_vertices
        assert len(mesh.faces) == result.n_faces
        uv = np.asarray(mesh.visual.uv)
        assert uv.shape == (result.n_vertices, 2)
        assert uv.min() >= 0.0 and uv.max() <= 1.0
        assert check_uvs(mesh.vertices, mesh.faces, uv, size=128).ok  # as written in the file
    glb_tex = np.asarray(glb.visual.material.baseColorTexture.convert("RGB"))
    obj_tex = np.asarray(obj.visual.material.image.convert("RGB"))
    np.testing.assert_array_equal(glb_tex, png)
    np.testing.assert_array_equal(obj_tex, png)
    # Same geometry and UVs in both files (OBJ stores 6 decimals).
    np.testing.assert_allclose(obj.vertices, glb.vertices, atol=2e-6)
    np.testing.assert_allclose(obj.visual.uv, glb.visual.uv, atol=2e-6)
    ply = trimesh.load(tmp_path / "ball.ply", process=False)
    assert len(ply.faces) == len(faces)
    assert ply.visual.vertex_colors.shape[0] == len(ply.vertices)


def test_texture_colour_at_uv_matches_field(ball, tmp_path):
    """The texel a vertex's UV points at holds the field's colour at that vertex (catches a flipped v)."""
    verts, faces = ball
    cfg = ExportConfig(formats=("glb",), texture_size=256, target_faces=0, size=0.0, center="none")
    export_mesh(verts, faces, wavy_albedo, tmp_path, "ball", cfg)
    glb = trimesh.load(tmp_path / "ball.glb", force="mesh", process=False)
    tex = np.asarray(glb.visual.material.baseColorTexture.convert("RGB")).astype(np.float64) / 255.0
    uv = np.asarray(glb.visual.uv)  # trimesh: OpenGL convention, v = 1 is the top row
    col = np.clip((uv[:, 0] * 256).astype(int), 0, 255)
    row = np.clip(((1.0 - uv[:, 1]) * 256).astype(int), 0, 255)
    expected = wavy_albedo(torch.as_tensor(np.asarray(glb.vertices), dtype=torch.float32)).numpy()
    err = np.abs(tex[row, col] - expected).max(axis=-1)
    assert np.median(err) < 0.02, np.median(err)
    assert np.percentile(err, 95) < 0.06


def test_two_exports_in_one_folder_do_not_overwrite(ball, tmp_path):
    verts, faces = ball
    cfg = ExportConfig(formats=("obj",), texture_size=64, target_faces=0)
    export_mesh(verts, faces, wavy_albedo, tmp_path, "apple", cfg)
    export_mesh(verts, faces, lambda x: torch.zeros_like(x), tmp_path, "pear", cfg)
    assert set(_files(tmp_path)) == {n for a in ("apple", "pear") for n in obj_file_names(a)}
    for name in ("apple", "pear"):
        mtl = (tmp_path / f"{name}.mtl").read_text()
        assert f"map_Kd {name}_albedo.png" in mtl
        assert f"mtllib {name}.mtl" in (tmp_path / f"{name}.obj").read_text()
    apple = trimesh.load(tmp_path / "apple.obj", process=False)
    pear = trimesh.load(tmp_path / "pear.obj", process=False)
    assert np.asarray(apple.visual.material.image).mean() > 50  # the wavy colours, not pear's black
    assert np.asarray(pear.visual.material.image).max() == 0


def test_placement_centres_and_scales_to_metres(tmp_path):
    m = trimesh.creation.box(extents=(0.4, 1.0, 0.2))
    verts = np.asarray(m.vertices, np.float32) + np.array([0.3, -0.2, 0.1], np.float32)
    cfg = ExportConfig(formats=("glb",), texture_size=64, target_faces=0, size=2.5)
    export_mesh(verts, m.faces, wavy_albedo, tmp_path, "box", cfg)
    glb = trimesh.load(tmp_path / "box.glb", force="mesh", process=False)
    lo, hi = glb.bounds
    np.testing.assert_allclose(hi - lo, [1.0, 2.5, 0.5], atol=1e-5)
    np.testing.assert_allclose((hi + lo) / 2, 0.0, atol=1e-5)
    ground = placement(verts, 1.0, "ground")
    placed = ground.apply(verts)
    assert placed[:, 1].min() == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(ground.invert(placed), verts, atol=1e-6)


def test_normals_point_outward_even_for_inside_out_input(ball, tmp_path):
    verts, faces = ball
    cfg = ExportConfig(formats=("glb",), texture_size=64, target_faces=0, size=0.0, center="none")
    export_mesh(verts, faces[:, ::-1], wavy_albedo, tmp_path, "ball", cfg)  # inside out
    glb = trimesh.load(tmp_path / "ball.glb", force="mesh", process=False)
    radial = glb.vertices / np.linalg.norm(glb.vertices, axis=1, keepdims=True)
    assert (np.einsum("ij,ij->i", glb.vertex_normals, radial) > 0.9).all()
    assert (np.einsum("ij,ij->i", glb.face_normals, glb.triangles_center) > 0).all()
    assert orient_outward(verts, faces[:, ::-1]).tolist() == faces.tolist()


# ------------------------------------------------------------------------------------------------ clean-up
def test_clean_mesh_drops_floaters_and_degenerate_faces(ball):
    verts, faces = ball
    speck = trimesh.creation.icosphere(subdivisions=1, radius=0.02)
    v = np.concatenate([verts, np.asarray(speck.vertices, np.float32) + 0.8])
    f = np.concatenate([faces, np.asarray(speck.faces) + len(verts), [[0, 0, 1], faces[5], faces[5][::-1]]])
    cv, cf = clean_mesh(v, f, min_component_fraction=0.05)
    assert len(cf) == len(faces)  # the speck, the degenerate face and both copies of face 5 are gone
    assert len(cv) == len(verts)
    assert np.linalg.norm(cv, axis=1).max() < 0.41
    # A second part of comparable size is an asset part, not a floater.
    big = np.concatenate([verts, verts + np.float32(1.0)])
    assert len(clean_mesh(big, np.concatenate([faces, faces + len(verts)]), 0.05)[1]) == 2 * len(faces)


def test_clean_mesh_collapses_a_tiny_face_instead_of_opening_a_hole(ball):
    """A watertight surface with one face 1e-6 across (as marching tets makes where the field is zero near a grid
    vertex) stays watertight: the tiny face is collapsed into a vertex, not deleted."""
    verts, faces = ball
    a, b, c = faces[0]
    va = verts[a].astype(np.float64)
    v = np.concatenate([verts, (va + [1e-6, 0, 0])[None], (va + [0, 1e-6, 0])[None]]).astype(np.float32)
    a1, a2 = len(verts), len(verts) + 1
    # Face (a, b, c) becomes a tiny triangle at a and four faces joining it to b and c (same winding).
    split = [[a, a1, a2], [a, b, a1], [a1, b, c], [a1, c, a2], [a2, c, a]]
    f = np.concatenate([faces[1:], np.asarray(split)])
    assert trimesh.Trimesh(v, f, process=False).is_watertight
    cv, cf = clean_mesh(v, f, min_component_fraction=0.05)
    m = trimesh.Trimesh(cv, cf, process=False)
    assert m.is_watertight and len(cf) == len(faces)
    assert np.abs(m.area - trimesh.Trimesh(verts, faces).area) < 1e-6


def test_clean_mesh_welds_a_triangle_soup(ball):
    verts, faces = ball
    soup_v = verts[faces].reshape(-1, 3)
    soup_f = np.arange(len(soup_v)).reshape(-1, 3)
    cv, cf = clean_mesh(soup_v, soup_f, min_component_fraction=0.05)
    assert len(cf) == len(faces) and len(cv) == len(verts)


def test_decimate_reaches_target_and_keeps_shape():
    m = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    v, f = decimate(np.asarray(m.vertices, np.float32), np.asarray(m.faces), 2000)
    assert abs(len(f) - 2000) <= 20
    r = np.linalg.norm(v, axis=1)
    assert r.min() > 0.47 and r.max() < 0.51
    same_v, same_f = decimate(np.asarray(m.vertices, np.float32), np.asarray(m.faces), 0)
    assert len(same_f) == len(m.faces)


def test_unwrap_uvs_in_unit_square_without_overlap(ball):
    verts, faces = ball
    uvm = unwrap(verts, faces, texture_size=256, padding=2)
    assert len(uvm.faces) == len(faces)
    # Every input face comes out once, same vertices, same winding (seams only duplicate vertices).
    assert sorted(map(_canonical, uvm.vmap[uvm.faces])) == sorted(map(_canonical, faces))
    report = check_uvs(uvm.positions, uvm.faces, uvm.uvs, size=256)
    assert report.ok and report.n_charts > 1, report


def _canonical(face) -> tuple[int, int, int]:
    """A triangle's vertex indices rotated to start at the smallest (the winding is kept)."""
    k = int(np.argmin(face))
    return tuple(int(face[(k + i) % 3]) for i in range(3))


def test_uv_check_rejects_overlapping_and_collapsed_charts(ball):
    """The check above can fail: a good unwrap broken in two ways, each caught by its own count."""
    verts, faces = ball
    uvm = unwrap(verts, faces, texture_size=256, padding=2)
    labels = uv_charts(uvm.faces, len(uvm.uvs))
    sizes = np.bincount(labels)
    a, b = np.argsort(sizes)[-2:]  # the two biggest charts
    in_a, in_b = np.unique(uvm.faces[labels == a]), np.unique(uvm.faces[labels == b])

    # (1) Chart b moved onto chart a (centre on centre, still inside the unit square): two charts overlap.
    moved = uvm.uvs.copy()
    moved[in_b] += moved[in_a].mean(axis=0) - moved[in_b].mean(axis=0)
    assert moved.min() >= 0 and moved.max() <= 1
    report = check_uvs(uvm.positions, uvm.faces, moved, size=256)
    assert not report.ok and report.overlap_texels > 0 and report.overlap_charts >= 1, report
    assert report.collapsed == report.flipped == report.out_of_range == 0

    # (2) Chart b squashed to one point: its faces get no texel at all (and overlap nothing).
    squashed = uvm.uvs.copy()
    squashed[in_b] = squashed[in_b].mean(axis=0)
    report = check_uvs(uvm.positions, uvm.faces, squashed, size=256)
    assert not report.ok and report.collapsed == sizes[b], report
    assert report.overlap_texels == report.flipped == report.out_of_range == 0

    # (3) One face of chart a mirrored across its own edge: a fold inside a chart.
    folded = uvm.uvs.copy()
    face = uvm.faces[labels == a][0]
    edge = folded[face[1]] - folded[face[0]]
    rel = folded[face[2]] - folded[face[0]]
    foot = folded[face[0]] + edge * (rel @ edge) / (edge @ edge)
    folded[face[2]] = 2 * foot - folded[face[2]]
    report = check_uvs(uvm.positions, uvm.faces, folded, size=256)
    assert not report.ok and report.flipped >= 1, report

    # (4) Every chart left at the origin (charted but never packed): many charts overlap.
    unpacked = uvm.uvs.copy()
    for chart in range(len(sizes)):
        in_chart = np.unique(uvm.faces[labels == chart])
        unpacked[in_chart] -= unpacked[in_chart].min(axis=0)
    report = check_uvs(uvm.positions, uvm.faces, unpacked, size=256)
    assert not report.ok and report.overlap_charts > len(sizes) // 2, report


def test_dilate_fills_every_texel_from_the_nearest_valid_one():
    img = np.zeros((8, 8, 3))
    valid = np.zeros((8, 8), bool)
    img[1, 1], valid[1, 1] = (1.0, 0.0, 0.0), True
    img[6, 6], valid[6, 6] = (0.0, 0.0, 1.0), True
    out = dilate(img, valid)
    assert (out[0, 0] == (1, 0, 0)).all() and (out[7, 7] == (0, 0, 1)).all()
    assert (out.sum(-1) == 1).all()  # no texel keeps the black background


# --------------------------------------------------------------------------------------------- auto threshold
def test_threshold_from_rays_picks_the_level_that_matches_the_silhouette():
    peak = torch.tensor([9.0, 7.0, 5.0, 3.0, 1.0, 0.5])
    opacity = torch.tensor([0.99, 0.9, 0.8, 0.6, 0.2, 0.1])
    est = threshold_from_rays(opacity, peak, opacity_level=0.5)
    assert 1.0 < est.threshold < 3.0 and est.iou == 1.0
    est = threshold_from_rays(opacity, peak, opacity_level=0.85)
    assert 5.0 < est.threshold < 7.0


def test_auto_threshold_isosurface_matches_rendered_silhouette():
    """For a Gaussian blob the rendered disc has a known radius; the chosen isosurface must have the same one."""
    from text3d.cameras import turntable_cameras

    amp, s = 40.0, 0.2

    def density(x):
        return amp * torch.exp(-(x**2).sum(-1) / (2 * s * s))

    # Opacity 0.5 where the optical depth through the blob is ln 2: amp * sqrt(2 pi) s * exp(-r^2 / 2s^2) = ln 2.
    r_render = s * math.sqrt(2 * math.log(amp * math.sqrt(2 * math.pi) * s / math.log(2)))
    cams = turntable_cameras(4, elevation_deg=0.0, distance=3.0, fovy_deg=40.0)
    est = auto_threshold(density, 1.0, cams, resolution=48, n_samples=128)
    r_iso = s * math.sqrt(2 * math.log(amp / est.threshold))
    # The camera is at finite distance: the silhouette of a sphere of radius r seen from distance d
    # subtends the same angle as a disc of radius r/sqrt(1 - r^2/d^2), a 1% effect here.
    assert r_iso == pytest.approx(r_render, rel=0.05)
    assert est.iou > 0.9
    opacity, peak = ray_densities(density, 1.0, cams, 48, 128)
    assert opacity.max() > 0.99


# ------------------------------------------------------------------------------------------------- (f) empty
def test_empty_renders_raise_and_write_nothing(tmp_path):
    out = tmp_path / "mesh"
    with pytest.raises(ExportError, match="renders are empty"):
        export_density(
            lambda x: torch.zeros(x.shape[0]),
            wavy_albedo,
            1.0,
            out,
            "nothing",
            ExportConfig(threshold_resolution=16, grid_resolution=16),
        )
    assert not out.exists()


def test_empty_isosurface_raises_and_writes_nothing(tmp_path):
    out = tmp_path / "mesh"
    cfg = ExportConfig(threshold=1000.0, grid_resolution=16)
    with pytest.raises(ExportError, match="isosurface at density 1000 is empty"):
        export_density(sphere_density(), wavy_albedo, 1.0, out, "nothing", cfg)
    assert not out.exists()
    with pytest.raises(ExportError, match="empty"):
        export_mesh(np.zeros((0, 3)), np.zeros((0, 3), int), wavy_albedo, out, "nothing", ExportConfig())
    with pytest.raises(ExportError, match="degenerate"):
        export_mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]), wavy_albedo, out, "flat", ExportConfig())
    assert not out.exists()


def test_a_failing_writer_leaves_no_partial_files_and_keeps_old_ones(ball, tmp_path, monkeypatch):
    verts, faces = ball
    cfg = ExportConfig(formats=("glb", "obj"), texture_size=64, target_faces=0)
    export_mesh(verts, faces, wavy_albedo, tmp_path, "old", cfg)
    before = {n: (tmp_path / n).read_bytes() for n in _files(tmp_path)}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("text3d.export.exporter.write_ply", broken)
    with pytest.raises(OSError, match="disk full"):
        export_mesh(
            verts,
            faces,
            wavy_albedo,
            tmp_path,
            "new",
            ExportConfig(formats=("glb", "obj", "ply"), texture_size=64),
        )
    with pytest.raises(OSError, match="disk full"):
        export_mesh(
            verts,
            faces,
            wavy_albedo,
            tmp_path,
            "old",
            ExportConfig(formats=("glb", "obj", "ply"), texture_size=64),
        )
    assert {n: (tmp_path / n).read_bytes() for n in _files(tmp_path)} == before  # no temp files either


def test_staged_files_commit_all_or_nothing(tmp_path):
    target = tmp_path / "new" / "a.bin"
    with staged_files() as st:
        st.path(target).write_bytes(b"x")
    assert not target.parent.exists()  # discarded: the folder it made is gone too
    with pytest.raises(OSError, match="empty"):
        with staged_files() as st:
            st.path(tmp_path / "b.bin").write_bytes(b"x")
            st.path(tmp_path / "c.bin")  # never written: an empty file is refused
            st.commit()
    assert _files(tmp_path) == []
    with staged_files() as st:
        st.path(target).write_bytes(b"x")
        st.commit()
    assert target.read_bytes() == b"x" and _files(target.parent) == ["a.bin"]


def test_bad_formats_and_thresholds_are_clear_errors(ball, tmp_path):
    assert parse_formats("GLB, obj,glb") == ("glb", "obj")
    with pytest.raises(ExportError, match="unknown export format 'fbx'"):
        parse_formats("glb,fbx")
    verts, faces = ball
    with pytest.raises(ExportError, match="threshold"):
        export_mesh(verts, faces, wavy_albedo, tmp_path, "x", ExportConfig(threshold="high"))
    assert _files(tmp_path) == []


def test_writers_module_has_no_stray_temp_files_after_success(ball, tmp_path):
    verts, faces = ball
    export_mesh(verts, faces, wavy_albedo, tmp_path, "ok", ExportConfig(formats=("glb",), texture_size=32))
    assert _files(tmp_path) == ["ok.glb"]
    assert oct(os.stat(tmp_path / "ok.glb").st_mode & 0o777) == "0o644"
