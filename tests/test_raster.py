"""The rasterizer twin against analytic answers (ray casting, areas, finite differences), and against nvdiffrast on
a GPU when one is present."""

from __future__ import annotations

import warnings

import pytest
import torch
import trimesh

from text3d.cameras import make_cameras
from text3d.errors import BackendUnavailableError
from text3d.render.raster import (
    antialias,
    edge_opposites,
    interpolate,
    nvdiffrast_available,
    rasterize,
    resolve_backend,
    texture,
)

NEAR, FAR = 0.1, 100.0  # Cameras.mvp() defaults


def _camera(elevation=20.0, azimuth=30.0, distance=3.0, fovy=40.0, dtype=torch.float64):
    cams = make_cameras(*(torch.tensor([v], dtype=dtype) for v in (elevation, azimuth, distance, fovy)))
    return cams


def _clip(verts: torch.Tensor, mvp: torch.Tensor) -> torch.Tensor:
    homo = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=1)
    return homo @ mvp.transpose(-1, -2)


def _ray_cast(verts, faces, origins, dirs):
    """Brute-force Moller-Trumbore: nearest hit distance per ray (inf on a miss). The oracle for coverage/depth."""
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    v0, v1, v2 = (verts[faces[:, i]] for i in range(3))  # [F, 3]
    e1, e2 = v1 - v0, v2 - v0
    p = torch.cross(d[:, None, :], e2[None], dim=-1)  # [R, F, 3]
    det = (p * e1[None]).sum(-1)
    inv = 1.0 / det
    s = o[:, None, :] - v0[None]
    u = (s * p).sum(-1) * inv
    q = torch.cross(s, e1[None].expand_as(s), dim=-1)
    v = (d[:, None, :] * q).sum(-1) * inv
    t = (e2[None] * q).sum(-1) * inv
    hit = (det.abs() > 1e-12) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    t = torch.where(hit, t, torch.full_like(t, float("inf")))
    return t.amin(dim=1).reshape(origins.shape[:-1])


def _camera_depth_from_ndc(z_ndc):
    """Invert the OpenGL projection: camera-space depth (w) from NDC z."""
    return 2 * FAR * NEAR / ((FAR + NEAR) - z_ndc * (FAR - NEAR))


@pytest.mark.parametrize("shape", ["triangle", "cube"])
def test_coverage_and_depth_match_ray_casting(shape):
    if shape == "triangle":  # a tilted triangle, so depth varies across it and perspective matters
        verts = torch.tensor([[-0.7, -0.5, 0.3], [0.8, -0.3, -0.6], [0.0, 0.75, 0.1]], dtype=torch.float64)
        faces = torch.tensor([[0, 1, 2]])
    else:
        box = trimesh.creation.box((1.0, 1.0, 1.0))
        verts, faces = torch.tensor(box.vertices), torch.tensor(box.faces)
    cams = _camera()
    h = w = 64
    r = rasterize(_clip(verts, cams.mvp()[0]), faces, (h, w), backend="torch")
    origins, dirs = cams.rays(h, w)
    t_true = _ray_cast(verts, faces, origins[0], dirs[0])  # [H, W]
    hit_true = torch.isfinite(t_true)
    hit = r.mask[0, ..., 0] > 0
    assert hit_true.sum() > 200  # the object fills a good part of the picture
    # Coverage: pixel centres exactly on an edge may go either way; nothing else may differ.
    assert (hit != hit_true).sum() <= 2
    both = hit & hit_true
    # Depth: NDC z -> camera depth; the ray oracle gives distance along a unit ray -> camera depth via the axis.
    forward = -cams.c2w[0, :3, 2]
    cam_depth_true = t_true * (dirs[0] @ forward)
    cam_depth = _camera_depth_from_ndc(r.rast[0, ..., 2])
    torch.testing.assert_close(cam_depth[both], cam_depth_true[both], atol=1e-6, rtol=1e-6)
    # Perspective-correct interpolation: interpolated world positions lie on each pixel's ray at the hit.
    pts = interpolate(verts, r, faces)[0]
    expected = origins[0] + dirs[0] * t_true[..., None]
    torch.testing.assert_close(pts[both], expected[both], atol=1e-9, rtol=1e-9)
    assert (pts[~hit] == 0).all()


def test_a_triangle_reaching_behind_the_camera_is_clipped_not_dropped():
    """One vertex behind the camera, two in front: what lies beyond the near plane is drawn (nvdiffrast clips such
    triangles), with ray-cast coverage, depth and perspective-correct interpolation; closer hits are clipped."""
    cams = _camera()
    c2w = cams.c2w[0]
    eye, right, up, fwd = c2w[:3, 3], c2w[:3, 0], c2w[:3, 1], -c2w[:3, 2]
    verts = torch.stack(
        [
            eye - 0.5 * fwd + 0.2 * up,  # behind the camera
            eye + 2.0 * fwd - 0.9 * right - 0.6 * up,
            eye + 2.5 * fwd + 0.8 * right - 0.3 * up,
        ]
    )
    faces = torch.tensor([[0, 1, 2]])
    clip = _clip(verts, cams.mvp()[0])
    assert clip[0, 3] < 0 < clip[1:, 3].min()
    h = w = 64
    r = rasterize(clip, faces, (h, w), backend="torch")
    origins, dirs = cams.rays(h, w)
    t_true = _ray_cast(verts, faces, origins[0], dirs[0])
    cam_depth_true = t_true * (dirs[0] @ fwd)
    hit_true = torch.isfinite(t_true) & (cam_depth_true > NEAR)  # nearer than the near plane: clipped
    hit = r.mask[0, ..., 0] > 0
    assert hit_true.sum() > 500  # it fills a large part of the picture
    assert (hit != hit_true).sum() <= 3  # pixel centres on an edge or on the near plane may go either way
    both = hit & hit_true
    torch.testing.assert_close(
        _camera_depth_from_ndc(r.rast[0, ..., 2])[both], cam_depth_true[both], atol=1e-6, rtol=1e-6
    )
    pts = interpolate(verts, r, faces)[0]
    expected = origins[0] + dirs[0] * t_true[..., None]
    torch.testing.assert_close(pts[both], expected[both], atol=1e-9, rtol=1e-9)
    # Antialiasing leaves the clipped triangle's image finite and unchanged in its interior.
    img = antialias(torch.cat([r.mask, pts[None]], dim=-1), r, clip, faces)
    assert torch.isfinite(img).all()


def test_top_row_first_and_pixel_centres():
    """A triangle in the upper half of NDC lands in the top rows; its area in pixels is exact on a grid."""
    h = w = 32
    pos = torch.tensor([[-1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]])
    r = rasterize(pos, torch.tensor([[0, 1, 2]]), (h, w), backend="torch")
    rows = r.mask[0, ..., 0].sum(dim=1)
    assert rows[: h // 2].sum() > 0 and rows[h // 2 :].sum() == 0
    # Row i (centre y = 1 - (i + .5) * 2/h) covers the column centres x_j = (j + .5) * 2/w - 1 <= 1 - 2y, i.e.
    # j <= 2i + 0.5: exactly 2i + 1 pixels, growing downwards from the apex at the top.
    assert rows[: h // 2].tolist() == [float(2 * i + 1) for i in range(h // 2)]
    assert r.triangle_id[0, 0, 0] == 0 and r.triangle_id[0, -1, -1] == -1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coverage_tolerance_follows_the_dtype(dtype):
    """A rectangle whose right edge stops 5e-4 px short of column 4's centres covers that column in float32 (the
    1e-3 px tolerance that keeps shared edges watertight) but not in float64 (1e-6 px: exact labels); 5e-7 px short
    it covers it in both, and the diagonal shared by its two triangles leaves no pinhole."""
    h = w = 8
    centre = (4 + 0.5) * 2 / w - 1  # column 4's centres in NDC
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]])
    for short_px, covered in ((5e-4, dtype == torch.float32), (5e-7, True)):
        x = centre - short_px * 2 / w
        pos = torch.tensor([[-1, -1, 0, 1], [x, -1, 0, 1], [x, 1, 0, 1], [-1, 1, 0, 1]], dtype=torch.float64)
        mask = rasterize(pos.to(dtype), tri, (h, w), backend="torch").triangle_id[0] >= 0
        assert bool(mask[:, :4].all()) and not bool(mask[:, 5:].any())
        assert bool(mask[:, 4].all()) == covered and bool(mask[:, 4].any()) == covered


def test_batch_and_chunking_do_not_change_the_result():
    sphere = trimesh.creation.icosphere(3)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32) * 0.8
    faces = torch.tensor(sphere.faces)
    cams = make_cameras(
        torch.tensor([10.0, 40.0]),
        torch.tensor([0.0, 120.0]),
        torch.tensor([2.0, 2.5]),
        torch.tensor([45.0, 45.0]),
    )
    clip = torch.stack([_clip(verts, m) for m in cams.mvp()])  # [2, V, 4]
    full = rasterize(clip, faces, (40, 48), backend="torch").rast
    chunked = rasterize(clip, faces, (40, 48), backend="torch", max_fragments=97).rast
    torch.testing.assert_close(full, chunked)
    for i in range(2):
        torch.testing.assert_close(full[i : i + 1], rasterize(clip[i], faces, (40, 48), backend="torch").rast)


def test_barycentric_gradients_match_finite_differences():
    """gradcheck (float64) of u, v, z/w and of interpolated attributes w.r.t. clip positions with varied w."""
    torch.manual_seed(1)
    pos = torch.tensor(
        [[-0.6, -0.5, 0.2, 1.3], [0.7, -0.4, 0.5, 0.9], [0.1, 0.8, -0.1, 1.1]], dtype=torch.float64
    ).requires_grad_()
    attr = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    tri = torch.tensor([[0, 1, 2]])

    def f(p, a):
        r = rasterize(p, tri, (12, 12), backend="torch")
        return r.rast[..., :3], interpolate(a, r, tri)

    assert torch.autograd.gradcheck(f, (pos, attr), eps=1e-6, atol=1e-6)


def _pixels_to_clip(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pixel coordinates (x = column, y = row, centres at integers) to clip space with w = 1."""
    x = (p[:, 0] + 0.5) / w * 2 - 1
    y = 1 - (p[:, 1] + 0.5) / h * 2
    return torch.stack([x, y, torch.zeros_like(x), torch.ones_like(x)], dim=-1)


def test_antialias_gives_silhouette_gradients_that_match_the_area():
    """Antialiased coverage of a triangle ~ its area; its vertex gradient ~ the area's gradient and central
    finite differences (which step across whole pixels, so they test the edge term, not just autograd)."""
    h = w = 48
    tri = torch.tensor([[0, 1, 2]])
    corners = torch.tensor([[8.3, 10.7], [40.2, 14.1], [19.6, 39.4]], dtype=torch.float64)

    def coverage(p):
        clip = _pixels_to_clip(p, h, w)
        r = rasterize(clip, tri, (h, w), backend="torch")
        return antialias(r.mask, r, clip, tri).sum()

    p = corners.clone().requires_grad_()
    cov = coverage(p)
    cov.backward()
    q = corners.clone().requires_grad_()
    e1, e2 = q[1] - q[0], q[2] - q[0]
    area = 0.5 * (e1[0] * e2[1] - e1[1] * e2[0]).abs()
    area.backward()
    assert abs(cov.item() - area.item()) < 0.01 * area.item()
    rel = (p.grad - q.grad).norm() / q.grad.norm()
    assert rel < 0.1, (p.grad, q.grad)
    eps = 0.5
    fd = torch.zeros(6, dtype=torch.float64)
    for i in range(6):
        d = torch.zeros(6, dtype=torch.float64)
        d[i] = eps
        fd[i] = (coverage(corners + d.view(3, 2)) - coverage(corners - d.view(3, 2))) / (2 * eps)
    assert (fd - p.grad.flatten()).norm() / fd.norm() < 0.1
    # Without antialias the coverage is a step function: no gradient at all.
    p2 = corners.clone().requires_grad_()
    clip = _pixels_to_clip(p2, h, w)
    r = rasterize(clip, tri, (h, w), backend="torch")
    assert not r.mask.requires_grad


def test_antialias_leaves_interior_edges_alone():
    """A quad split into two triangles: only the outer boundary is blended, not the shared diagonal."""
    h = w = 32
    quad = torch.tensor([[4.2, 5.3], [27.1, 6.2], [26.3, 25.8], [5.1, 26.7]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]])
    clip = _pixels_to_clip(quad, h, w)
    r = rasterize(clip, tri, (h, w), backend="torch")
    colour = r.mask.expand(-1, -1, -1, 3) * torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    out = antialias(colour, r, clip, tri)
    changed = (out - colour).abs().sum(-1)[0] > 0
    interior = torch.zeros(h, w, dtype=torch.bool)
    interior[9:23, 9:23] = True  # far (> 3 px) from the outer boundary, but crossed by the diagonal
    assert changed.any() and not changed[interior].any()
    # Edge k is opposite vertex k; only the diagonal (0, 2) has a face on the other side.
    assert edge_opposites(tri).tolist() == [[-1, 3, -1], [-1, -1, 1]]


def test_texture_bilinear_lookup():
    tex = torch.tensor([[[[0.0], [1.0]], [[2.0], [3.0]]]])  # [1, 2, 2, 1]: rows (v) then columns (u)
    uv = torch.tensor([[[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5, 0.5], [0.0, 0.0]]]])
    wrap = texture(tex, uv, boundary_mode="wrap", backend="torch")[0, 0, :, 0]
    clamp = texture(tex, uv, boundary_mode="clamp", backend="torch")[0, 0, :, 0]
    torch.testing.assert_close(wrap, torch.tensor([0.0, 1.0, 2.0, 1.5, 1.5]))
    torch.testing.assert_close(clamp, torch.tensor([0.0, 1.0, 2.0, 1.5, 0.0]))


def test_backend_selection():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("torch", cpu) == "torch"
    with pytest.raises(BackendUnavailableError, match="nvdiffrast"):
        resolve_backend("nvdiffrast", cpu)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert resolve_backend("nvdiffrast", cpu, fallback=True) == "torch"
    with pytest.raises(ValueError):
        resolve_backend("opengl", cpu)


# ---------------------------------------------------------------------------------------------------------- GPU
_HAS_NVDIFFRAST_GPU = torch.cuda.is_available() and nvdiffrast_available()


def _random_meshes(device):
    """A bumpy sphere (closed, with self-occlusion) and a soup of overlapping random triangles."""
    g = torch.Generator().manual_seed(0)
    s = trimesh.creation.icosphere(4)
    v = torch.tensor(s.vertices, dtype=torch.float32)
    v = v * (0.7 + 0.1 * torch.rand(len(v), 1, generator=g))
    yield v.to(device), torch.tensor(s.faces, dtype=torch.int32, device=device)
    centres = (torch.rand(60, 1, 3, generator=g) - 0.5) * 1.2
    soup = (centres + 0.25 * torch.randn(60, 3, 3, generator=g)).reshape(-1, 3)
    yield soup.to(device), torch.arange(180, dtype=torch.int32, device=device).reshape(60, 3)


@pytest.mark.gpu
@pytest.mark.skipif(
    not _HAS_NVDIFFRAST_GPU, reason="needs a CUDA GPU and nvdiffrast (pip install text3d[nvdiffrast])"
)
def test_twin_matches_nvdiffrast():
    dev = torch.device("cuda")
    cams = make_cameras(
        torch.tensor([15.0, -5.0]),
        torch.tensor([30.0, 200.0]),
        torch.tensor([2.0, 2.2]),
        torch.tensor([45.0, 40.0]),
    ).to(dev)
    res = (256, 256)
    for verts, faces in _random_meshes(dev):
        attr = torch.rand(len(verts), 3, device=dev, generator=torch.Generator(device=dev).manual_seed(1))
        weights = torch.rand(2, *res, 3, device=dev, generator=torch.Generator(device=dev).manual_seed(2))
        results = {}
        for backend in ("torch", "nvdiffrast"):
            v = verts.clone().requires_grad_()
            clip = torch.stack([_clip(v, m) for m in cams.mvp()])
            r = rasterize(clip, faces, res, backend=backend)
            col = interpolate(attr, r, faces)
            aa = antialias(col, r, clip, faces)
            (aa * weights).sum().backward()
            results[backend] = (r.rast.detach(), col.detach(), v.grad.flatten())
        (ra, ca, ga), (rb, cb, gb) = results["torch"], results["nvdiffrast"]
        cov_a, cov_b = ra[..., 3] > 0, rb[..., 3] > 0
        mismatch = (cov_a != cov_b).float().mean().item()
        same = cov_a & cov_b & (ra[..., 3] == rb[..., 3])
        cos = torch.nn.functional.cosine_similarity(ga, gb, dim=0).item()
        print(f"faces={len(faces)} coverage mismatch={mismatch:.5f} grad cosine={cos:.4f}")
        assert mismatch < 0.005
        torch.testing.assert_close(ca[same], cb[same], atol=2e-4, rtol=1e-3)
        torch.testing.assert_close(ra[..., 2][same], rb[..., 2][same], atol=1e-4, rtol=1e-4)
        assert cos >= 0.95
