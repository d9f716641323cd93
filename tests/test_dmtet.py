"""The tet grid, marching tets, mesh regularisers, and a DMTet fit to a known torus through the rasterizer."""

from __future__ import annotations

import math
import time

import torch
import trimesh

from text3d.cameras import make_cameras
from text3d.fields.dmtet import DMTet, DMTetConfig
from text3d.geometry.mesh import laplacian_smoothness, normal_consistency, vertex_normals
from text3d.geometry.tets import build_tet_grid, load_tet_grid, marching_tets
from text3d.pipeline import deterministic_algorithms
from text3d.render.raster import antialias, interpolate, rasterize


def _tet_volumes(verts, tets):
    e = verts[tets[:, 1:]] - verts[tets[:, :1]]  # [T, 3, 3]
    return torch.linalg.det(e.double()) / 6.0


def test_tet_grid_is_a_conforming_positive_partition_of_the_cube(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT3D_CACHE_DIR", str(tmp_path))
    res = 8
    n = res // 2
    verts, tets = load_tet_grid(res)
    assert verts.shape == ((n + 1) ** 3, 3) and tets.shape == (6 * n**3, 4)
    assert verts.min() == -1.0 and verts.max() == 1.0
    vol = _tet_volumes(verts, tets)
    assert (vol > 0).all()  # every tet positively oriented
    torch.testing.assert_close(vol.sum(), torch.tensor(8.0, dtype=torch.float64))  # they tile [-1, 1]^3
    # Conforming: every triangle is shared by two tets, except those on the cube's surface (2 per square).
    faces = torch.cat([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]])
    _, counts = torch.unique(faces.sort(dim=1).values, dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    assert int((counts == 1).sum()) == 6 * 2 * n * n
    # Cached on disk, and the cached copy is what a second load returns.
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and cached[0].stat().st_size > 0
    v2, t2 = load_tet_grid(res)
    assert torch.equal(v2, verts) and torch.equal(t2, tets)
    built_v, built_t = build_tet_grid(res)
    assert torch.equal(built_v, verts) and torch.equal(built_t, tets)


def test_marching_tets_sphere_is_watertight_outward_and_accurate(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT3D_CACHE_DIR", str(tmp_path))
    dmtet = DMTet(DMTetConfig(resolution=32), bound=1.0)
    radius = 0.6
    dmtet.set_sdf(radius - dmtet.grid.norm(dim=-1))  # positive inside
    mesh = dmtet.extract()
    tm = trimesh.Trimesh(mesh.verts.detach().numpy(), mesh.faces.numpy(), process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume > 0  # counter-clockwise from outside: positive signed volume
    centroids = mesh.verts[mesh.faces].mean(1)
    normals = torch.cross(
        mesh.verts[mesh.faces[:, 1]] - mesh.verts[mesh.faces[:, 0]],
        mesh.verts[mesh.faces[:, 2]] - mesh.verts[mesh.faces[:, 0]],
        dim=-1,
    )
    assert ((normals * centroids).sum(-1) > 0).all()
    # Vertices sit on the sphere up to the chord error of linear interpolation in a cell of 1/8.
    assert (mesh.verts.norm(dim=-1) - radius).abs().max() < 0.02
    assert abs(tm.volume - 4 / 3 * math.pi * radius**3) < 0.03 * 4 / 3 * math.pi * radius**3


def test_marching_tets_is_differentiable_wrt_sdf_and_positions():
    verts, tets = build_tet_grid(4)
    pos = (verts.double() * 0.9 + 0.01 * torch.randn_like(verts.double())).requires_grad_()
    sdf = 0.55 - verts.double().norm(dim=-1) + 0.01 * torch.randn(verts.shape[0], dtype=torch.float64)
    sdf = sdf.requires_grad_()
    n_verts = marching_tets(pos, sdf, tets).verts.shape[0]
    assert n_verts > 0
    torch.autograd.gradcheck(lambda p, s: marching_tets(p, s, tets).verts, (pos, sdf), eps=1e-6, atol=1e-6)


def test_deformation_is_bounded_by_the_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT3D_CACHE_DIR", str(tmp_path))
    dmtet = DMTet(DMTetConfig(resolution=8, deform_scale=0.5))
    with torch.no_grad():
        dmtet.deform.fill_(100.0)
    shift = (dmtet.positions() - dmtet.grid).abs().max()
    assert shift <= 0.5 * dmtet.cell + 1e-6 and shift > 0.49 * dmtet.cell


def test_mesh_regularisers():
    plane = trimesh.creation.box((1.0, 1.0, 1.0)).subdivide().subdivide()
    v, f = torch.tensor(plane.vertices, dtype=torch.float32), torch.tensor(plane.faces)
    sphere = trimesh.creation.icosphere(3)
    sv, sf = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    # A box has 12 sharp edges; a finely tessellated sphere is smooth everywhere.
    assert normal_consistency(v, f) > 5 * normal_consistency(sv, sf)
    noisy = sv + 0.02 * torch.randn_like(sv)
    assert normal_consistency(noisy, sf) > 2 * normal_consistency(sv, sf)
    assert laplacian_smoothness(noisy, sf) > 2 * laplacian_smoothness(sv, sf)
    vn = vertex_normals(sv, sf)
    torch.testing.assert_close(vn, sv / sv.norm(dim=-1, keepdim=True), atol=2e-2, rtol=0)


# ------------------------------------------------------------------------------------------------ geometry fit
def _point_to_mesh(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Exact distance from each point to the nearest triangle (brute force, chunked)."""
    a, b, c = (verts[faces[:, i]] for i in range(3))  # [F, 3]
    out = []
    for p in points.split(256):
        p = p[:, None, :]  # [P, 1, 3]
        n = torch.cross(b - a, c - a, dim=-1)
        n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        d_plane = ((p - a) * n).sum(-1)  # [P, F]
        proj = p - d_plane[..., None] * n
        inside = torch.ones_like(d_plane, dtype=torch.bool)
        for u, v in ((a, b), (b, c), (c, a)):
            inside &= (torch.cross((v - u).expand_as(proj), proj - u, dim=-1) * n).sum(-1) >= 0
        best = torch.where(inside, d_plane.abs(), torch.full_like(d_plane, float("inf")))
        for u, v in ((a, b), (b, c), (c, a)):
            e = v - u
            t = (((p - u) * e).sum(-1) / (e * e).sum(-1).clamp(min=1e-12)).clamp(0, 1)
            best = torch.minimum(best, (p - (u + t[..., None] * e)).norm(dim=-1))
        out.append(best.amin(dim=1))
    return torch.cat(out)


def _chamfer(mesh_a: trimesh.Trimesh, mesh_b: trimesh.Trimesh, n: int = 2000) -> float:
    """Symmetric Chamfer distance: mean point-to-surface distance of area samples, averaged over both ways."""
    pa = torch.tensor(mesh_a.sample(n, seed=1), dtype=torch.float32)
    pb = torch.tensor(mesh_b.sample(n, seed=2), dtype=torch.float32)
    va, fa = torch.tensor(mesh_a.vertices, dtype=torch.float32), torch.tensor(mesh_a.faces)
    vb, fb = torch.tensor(mesh_b.vertices, dtype=torch.float32), torch.tensor(mesh_b.faces)
    return 0.5 * (_point_to_mesh(pa, vb, fb).mean() + _point_to_mesh(pb, va, fa).mean()).item()


def test_dmtet_fits_a_torus_from_silhouettes_and_normals(tmp_path, monkeypatch):
    """Issue 3 (c): SDF + deformation fitted to 16 silhouette and normal renders of a trimesh torus, from a sphere,
    reaches a Chamfer distance <= 1% of the bounding-box diagonal on CPU."""
    monkeypatch.setenv("TEXT3D_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    torus = trimesh.creation.torus(0.55, 0.25, major_sections=48, minor_sections=24)
    # Axis along Z (a standing ring): the hole shows in the silhouettes of the front and back views, so it is
    # observable; a ring lying flat would need views from nearly overhead.
    tv, tf = torch.tensor(torus.vertices, dtype=torch.float32), torch.tensor(torus.faces)
    n_views, res = 16, 64
    cams = make_cameras(
        torch.tensor([35.0, -25.0] * (n_views // 2)),
        torch.arange(n_views) * (360.0 / n_views),
        torch.full((n_views,), 2.2),
        torch.full((n_views,), 40.0),
    )
    mvp = cams.mvp()

    def render(verts, faces, views):
        """``[V, H, W, 4]``: antialiased silhouette and interpolated vertex normals."""
        clip = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=1) @ mvp[views].transpose(-1, -2)
        r = rasterize(clip, faces, (res, res), backend="torch")
        normals = interpolate(vertex_normals(verts, faces), r, faces)
        return antialias(torch.cat([r.mask, normals], dim=-1), r, clip, faces)

    with torch.no_grad():
        target = render(tv, tf, torch.arange(n_views))
    dmtet = DMTet(DMTetConfig(resolution=32))
    dmtet.set_sdf(0.8 - dmtet.grid.norm(dim=-1))  # a sphere around the torus: the hole must be carved
    steps = 150
    opt = torch.optim.Adam([dmtet.sdf, dmtet.deform], lr=0.03)
    t0 = time.perf_counter()
    # Deterministic kernels, as every CPU run has them: with 2 threads the scatter-adds of the rasterizer's backward
    # otherwise sum in a varying order, and 3 of 10 fits here ended with a surface that was not watertight.
    with deterministic_algorithms(True):
        for _ in range(steps):
            views = torch.randperm(n_views)[:4]
            mesh = dmtet.extract()
            out, tgt = render(mesh.verts, mesh.faces, views), target[views]
            loss = ((out[..., :1] - tgt[..., :1]) ** 2).mean() + 0.25 * (
                (out[..., 1:] - tgt[..., 1:]) ** 2
            ).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    mesh = dmtet.extract()
    fitted = trimesh.Trimesh(mesh.verts.detach().numpy(), mesh.faces.numpy(), process=False)
    diag = float(torch.tensor(torus.bounds[1] - torus.bounds[0]).norm())
    start = trimesh.creation.icosphere(3, radius=0.8)
    chamfer, chamfer_start = _chamfer(fitted, torus), _chamfer(start, torus)
    print(
        f"torus fit: chamfer {chamfer:.4f} = {100 * chamfer / diag:.2f}% of the diagonal "
        f"(start {100 * chamfer_start / diag:.1f}%), {time.perf_counter() - t0:.1f}s"
    )
    assert chamfer <= 0.01 * diag
    assert fitted.is_watertight and fitted.volume > 0
