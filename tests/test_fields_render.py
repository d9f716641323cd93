"""Hash grid, NeRF field, volume renderer and cameras: gradients and known answers."""

from __future__ import annotations

import math

import torch

from text3d.cameras import (
    CameraSamplerConfig,
    make_cameras,
    sample_cameras,
    turntable_cameras,
    view_direction_ids,
)
from text3d.fields.encoding import HashGridConfig, HashGridEncoding
from text3d.fields.nerf import NeRFField, NeRFFieldConfig
from text3d.geometry.rays import composite, ray_aabb
from text3d.render.shading import DiffuseShader, ShadingMode, ShadingParams, shade
from text3d.render.volume import accumulate


def _tiny_grid(dtype=torch.float64) -> HashGridEncoding:
    # Level 0 dense (5^3 corners), levels 1-2 hashed into a 128-row table: both index paths are exercised.
    cfg = HashGridConfig(
        n_levels=3, n_features_per_level=2, log2_hashmap_size=7, base_resolution=4, max_resolution=16
    )
    enc = HashGridEncoding(cfg, dtype=dtype)
    with torch.no_grad():
        enc.embeddings.normal_()
    return enc


def test_hash_grid_gradcheck():
    """(c) gradcheck w.r.t. the table and the positions (points kept away from cell faces)."""
    enc = _tiny_grid()
    assert enc.dense[0] and not enc.dense[-1]
    x = (torch.rand(6, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    # Keep every coordinate inside a cell at every level so finite differences don't cross a kink.
    for res in enc.resolutions:
        frac = (x.detach() * res) % 1.0
        x.data += ((frac < 0.05).double() * 0.06 - (frac > 0.95).double() * 0.06) / res
    assert torch.autograd.gradcheck(lambda p: enc(p), (x,), eps=1e-6, atol=1e-5)
    emb = enc.embeddings
    assert torch.autograd.gradcheck(
        lambda e: _with_table(enc, e, x.detach()), (emb.detach().clone().requires_grad_(True),)
    )


def _with_table(enc, table, x):
    saved = enc.embeddings
    try:
        del enc._parameters["embeddings"]
        enc.embeddings = table
        return enc(x)
    finally:
        enc.embeddings = saved


def test_hash_grid_interpolates_corners_exactly():
    enc = _tiny_grid()
    res = enc.resolutions[0]
    corner = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64) / res
    out = enc(corner)[:, :2]  # level 0 is dense: index = x + (res+1)(y + (res+1) z)
    idx = 1 + (res + 1) * (2 + (res + 1) * 3)
    torch.testing.assert_close(out[0], enc.embeddings[idx])


def _reference_encoding(enc: HashGridEncoding, p: list[float]) -> torch.Tensor:
    """One point, written out the plain way: per level, the 8 corners' table rows (dense index or the spatial hash
    of the module docstring), blended with trilinear weights."""
    feats = []
    for level, res in enumerate(enc.resolutions):
        scaled = [min(max(c, 0.0), 1.0) * res for c in p]
        base = [min(math.floor(c), res - 1) for c in scaled]
        frac = [c - b for c, b in zip(scaled, base, strict=True)]
        acc = torch.zeros(enc.cfg.n_features_per_level, dtype=enc.embeddings.dtype)
        for cx in (0, 1):
            for cy in (0, 1):
                for cz in (0, 1):
                    i, j, k = base[0] + cx, base[1] + cy, base[2] + cz
                    if enc.dense[level]:
                        row = i + (res + 1) * (j + (res + 1) * k)
                    else:
                        row = (i ^ (j * 2654435761) ^ (k * 805459861)) % enc.sizes[level]
                    weight = 1.0
                    for bit, f in zip((cx, cy, cz), frac, strict=True):
                        weight *= f if bit else 1.0 - f
                    acc = acc + weight * enc.embeddings[enc.offsets[level] + row].detach()
        feats.append(acc)
    return torch.cat(feats)


def test_hash_grid_matches_a_plain_per_point_reference():
    """The vectorised encoding (all levels and corners at once) against the formula spelled out point by point."""
    enc = _tiny_grid()
    points = torch.rand(20, 3, dtype=torch.float64) * 1.2 - 0.1  # some outside [0, 1]: clamped
    points[0] = torch.tensor([1.0, 0.0, 1.0])  # the far faces, where the cell index is clamped to res - 1
    out = enc(points)
    ref = torch.stack([_reference_encoding(enc, p.tolist()) for p in points])
    torch.testing.assert_close(out.detach(), ref, rtol=1e-12, atol=1e-12)


def test_composite_gradcheck_and_known_values():
    """(c) compositing weights: gradcheck, and the closed form for constant density."""
    density = torch.rand(5, 7, dtype=torch.float64).requires_grad_(True)
    deltas = torch.rand(5, 7, dtype=torch.float64) * 0.2 + 0.01
    colors = torch.rand(5, 7, 3, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d, c: accumulate(composite(d, deltas), c), (density, colors))
    sigma, delta, n = 2.0, 0.1, 10
    w = composite(
        torch.full((1, n), sigma, dtype=torch.float64), torch.full((1, n), delta, dtype=torch.float64)
    )
    alpha = 1 - math.exp(-sigma * delta)
    expected = torch.tensor([alpha * (1 - alpha) ** i for i in range(n)], dtype=torch.float64)
    torch.testing.assert_close(w[0], expected)
    torch.testing.assert_close(w.sum(), torch.tensor(1 - math.exp(-sigma * delta * n), dtype=torch.float64))


def test_volume_renderer_gradcheck_through_field():
    """(c) the full renderer (sampling, field, shading, compositing) in float64 on a 3x3 image."""
    cfg = NeRFFieldConfig(
        encoding=HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4, max_resolution=8),
        hidden_dim=8,
    )
    field = NeRFField(cfg).double()
    from text3d.fields.nerf import Background, BackgroundConfig
    from text3d.render.volume import VolumeRenderer, VolumeRendererConfig

    bg = Background(BackgroundConfig(kind="solid")).double()
    renderer = VolumeRenderer(VolumeRendererConfig(n_samples=6))
    cams = turntable_cameras(1, elevation_deg=20.0, distance=1.6)
    cams = make_cameras(
        *(t.double() for t in (cams.elevation, cams.azimuth, cams.distance, torch.rad2deg(cams.fovy)))
    )
    # gradcheck w.r.t. the last MLP layer (it feeds density and albedo), via functional_call.
    from torch.func import functional_call

    names = [n for n, _ in field.named_parameters() if n.startswith("mlp.2")]
    base = dict(field.named_parameters())

    def fn(w, b):
        p = {**base, names[0]: w, names[1]: b}

        class _F:
            cfg = field.cfg

            def __call__(self, x, with_normals=False):
                return functional_call(field, p, (x,), {"with_normals": with_normals})

        return renderer(_F(), bg, cams, 3, 3, DiffuseShader(), ShadingParams(ShadingMode.ALBEDO)).rgb

    w0 = base[names[0]].detach().clone().requires_grad_(True)
    b0 = base[names[1]].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (w0, b0), eps=1e-6, atol=1e-5)


def test_blob_init_renders_a_centred_ball():
    field = NeRFField(
        NeRFFieldConfig(encoding=HashGridConfig(n_levels=4, log2_hashmap_size=12, max_resolution=64))
    )
    from text3d.representations.nerf import NeRFRepresentation

    nerf = NeRFRepresentation()
    nerf.field = field
    cams = turntable_cameras(1, distance=2.0, fovy_deg=60.0)
    with torch.no_grad():
        out = nerf.render(cams, 32, 32, DiffuseShader(), ShadingParams(ShadingMode.ALBEDO))
    op = out.opacity[0, ..., 0]
    assert op[16, 16] > 0.95 and op[0, 0] < 0.05 and op[16, 0] < 0.05
    # depth at the centre: the camera is 2.0 away and the blob surface (density ~1) is near radius 0.5
    assert 1.3 < float(out.depth[0, 16, 16, 0]) < 1.8


def test_ray_aabb_and_camera_conventions():
    near, far = ray_aabb(torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]]), 1.0)
    assert near.item() == 2.0 and far.item() == 4.0
    cams = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([60.0]))
    torch.testing.assert_close(cams.positions[0], torch.tensor([0.0, 0.0, 2.0]))  # azimuth 0 looks from +Z
    o, d = cams.rays(5, 5)
    torch.testing.assert_close(d[0, 2, 2], torch.tensor([0.0, 0.0, -1.0]))  # centre ray hits the origin
    assert d[0, 0, 2, 1] > 0 and d[0, 2, 4, 0] > 0  # row 0 is the top (+Y), last column is the right (+X)
    # projecting a point with mvp gives the pixel the ray went through
    p = o[0, 0, 4] + 1.7 * d[0, 0, 4]
    clip = cams.mvp()[0] @ torch.cat([p, torch.ones(1)])
    ndc = clip[:2] / clip[3]
    torch.testing.assert_close(ndc, torch.tensor([0.8, 0.8]), atol=1e-5, rtol=0)
    side = make_cameras(torch.tensor([0.0]), torch.tensor([90.0]), torch.tensor([2.0]), torch.tensor([60.0]))
    torch.testing.assert_close(side.positions[0], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_view_directions_and_sampler_ranges():
    ids = view_direction_ids(
        torch.tensor([0.0, 0.0, 0.0, 0.0, 70.0]), torch.tensor([10.0, 90.0, 180.0, -170.0, 0.0])
    )
    assert ids.tolist() == [0, 1, 2, 2, 3]
    cfg = CameraSamplerConfig(batch_size=8)
    cams = sample_cameras(cfg)
    assert ((cams.elevation >= -10) & (cams.elevation <= 45)).all()
    assert ((cams.distance >= 1.5) & (cams.distance <= 2.0)).all()
    fov = torch.rad2deg(cams.fovy)
    assert ((fov >= 40 - 1e-4) & (fov <= 70 + 1e-4)).all()
    # stratified azimuth: exactly one camera per 45-degree stratum
    strata = ((cams.azimuth + 180) // 45).long().sort().values
    assert strata.tolist() == list(range(8))


def test_shading_modes():
    albedo = torch.tensor([[0.5, 0.2, 0.8]])
    n = torch.tensor([[0.0, 0.0, 1.0]])
    p = torch.zeros(1, 3)
    light = torch.tensor([[0.0, 0.0, 2.0]])
    assert torch.equal(shade(albedo, None, p, None, ShadingMode.ALBEDO), albedo)
    torch.testing.assert_close(shade(albedo, n, p, light, ShadingMode.LAMBERTIAN, 0.1, 0.9), albedo)
    torch.testing.assert_close(
        shade(albedo, n, p, -light, ShadingMode.TEXTURELESS, 0.1, 0.9), torch.full((1, 3), 0.1)
    )
