"""The SDF representation (issue 16): sphere tracing with implicit differentiation at the surface.

Truth from outside: closed-form ray intersections, central finite differences of analytic SDFs with learnable
shapes in float64, ``torch.autograd.gradcheck`` of a hash-grid field through the tracer, masks of an analytic
shape, trimesh's watertightness. Broken variants of the hit-point formula are shown to fail the same checks.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import trimesh
from torch.func import functional_call

from text3d.cameras import turntable_cameras
from text3d.fields.encoding import HashGridConfig
from text3d.fields.nerf import Background, BackgroundConfig
from text3d.fields.sdf import BoxSDF, SDFField, SDFFieldConfig, SphereSDF, TorusSDF
from text3d.render import sphere_trace as st
from text3d.render.shading import DiffuseShader, ShadingMode, ShadingParams
from text3d.render.sphere_trace import SphereTraceConfig, render_sdf, trace_rays
from text3d.representations.sdf import SDFConfig, SDFRepresentation

F64 = torch.float64
EXACT = SphereTraceConfig(hit_eps=1e-10, newton_steps=3, max_steps=200)
"""Converged to float64 round-off, so that finite differences of the forward pass are meaningful."""
SHADER = DiffuseShader()
LIT = ShadingParams(ShadingMode.LAMBERTIAN, torch.tensor([[1.0, 1.5, 2.0]], dtype=F64))


def _rays(targets) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from the front and the side towards points near the centre (all hit the test shapes, none grazing)."""
    o = torch.tensor([[0.1, 0.05, 3.0], [0.3, -0.1, 3.0], [-0.2, 0.15, 3.0], [2.5, 0.3, 1.5]], dtype=F64)
    t = torch.tensor(targets, dtype=F64)
    return o, F.normalize(t - o, dim=-1)


RAYS = _rays([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.0, 0.05, 0.1], [0.0, 0.1, 0.0]])


def _trace(field, cfg=EXACT, rays=RAYS):
    o, d = rays
    n = o.shape[0]
    return trace_rays(
        field, o, d, torch.ones(n, 3, dtype=F64), SHADER, LIT, torch.zeros(n, dtype=torch.long), 1.0, cfg,
        create_graph=True,
    )  # fmt: skip


def _outputs(field) -> torch.Tensor:
    """Hit points and shaded pixels of the rays, flattened."""
    out = _trace(field)
    assert bool(out.hit.all())
    return torch.cat([out.points.reshape(-1), out.rgb.reshape(-1)])


def _relative_error(field, names: list[str], h: float = 1e-6) -> float:
    """``max |J_autograd - J_fd| / max |J_fd|`` of :func:`_outputs` w.r.t. the named parameters (central
    differences, float64)."""
    params = [getattr(field, n) for n in names]
    y = _outputs(field)
    rows = []
    for i in range(y.numel()):
        grads = torch.autograd.grad(y[i], params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    jac = torch.stack(rows)
    cols = []
    with torch.no_grad():
        for p in params:
            flat = p.data.view(-1)
            for k in range(flat.numel()):
                old = float(flat[k])
                flat[k] = old + h
                plus = _outputs(field).detach()
                flat[k] = old - h
                minus = _outputs(field).detach()
                flat[k] = old
                cols.append((plus - minus) / (2 * h))
    fd = torch.stack(cols, dim=1)
    assert float(fd.abs().max()) > 0.1  # the outputs do depend on the parameters
    return float((jac - fd).abs().max() / fd.abs().max())


def _shapes():
    return {
        "sphere": (SphereSDF(centre=(0.05, -0.02, 0.03), radius=0.45, dtype=F64), ["centre", "radius"]),
        "box": (BoxSDF(half_extents=(0.4, 0.3, 0.35), dtype=F64), ["half_extents", "centre"]),
    }


# ------------------------------------------------------------------------------------------------- the tracer
def test_the_tracer_finds_closed_form_intersections_and_misses():
    sphere = SphereSDF(centre=(0.1, 0.0, -0.05), radius=0.4, dtype=F64)
    o, d = RAYS
    out = _trace(sphere)
    # |o + t d - c| = r: t = -b - sqrt(b^2 - |o - c|^2 + r^2) with b = d . (o - c)
    oc = o - sphere.centre.detach()
    b = (d * oc).sum(-1)
    t_true = -b - torch.sqrt(b * b - (oc * oc).sum(-1) + 0.4**2)
    torch.testing.assert_close(out.depth[:, 0].detach(), t_true, rtol=0, atol=1e-12)
    # a box from the side, a ray that misses everything, and a ray through the torus's hole
    box = BoxSDF(half_extents=(0.4, 0.3, 0.35), dtype=F64)
    side = _trace(
        box, rays=(torch.tensor([[2.0, 0.1, 0.05]], dtype=F64), torch.tensor([[-1.0, 0, 0]], dtype=F64))
    )
    assert abs(float(side.depth.detach()) - 1.6) < 1e-12
    assert side.normal is not None and torch.allclose(side.normal, torch.tensor([[1.0, 0, 0]], dtype=F64))
    torus = TorusSDF(major=0.5, minor=0.2, dtype=F64)
    down = torch.tensor([[0.0, -1.0, 0.0]], dtype=F64)
    for x, hits, depth in ((0.0, False, 0.0), (0.5, True, 2.8), (0.95, False, 0.0)):
        r = _trace(torus, rays=(torch.tensor([[x, 3.0, 0.0]], dtype=F64), down))
        assert bool(r.hit) == hits and abs(float(r.depth.detach()) - depth) < 1e-9, x
        if not hits:
            assert float(r.opacity.detach()) == 0.0 and torch.equal(
                r.rgb.detach(), torch.ones(1, 3, dtype=F64)
            )


@pytest.mark.parametrize("shape", ["sphere", "box"])
def test_hit_point_and_shaded_pixel_gradients_match_central_differences(shape):
    """Acceptance (a): d(hit point)/d(shape) and d(Lambertian pixel)/d(shape), relative error <= 1e-4."""
    field, names = _shapes()[shape]
    err = _relative_error(field, names)
    print(f"{shape}: relative error {err:.2e}")
    assert err <= 1e-4


def _no_correction(sdf, origins, dirs, t0, min_cos=0.0):
    t = t0.detach()
    return origins + t[:, None] * dirs, t


_IMPLICIT_HIT = st.implicit_hit


def _flipped_correction(sdf, origins, dirs, t0, min_cos=0.0):
    x, t = _IMPLICIT_HIT(sdf, origins, dirs, t0, min_cos)
    t_bad = 2 * t0.detach() - t  # the correction with the wrong sign
    return origins + t_bad[:, None] * dirs, t_bad


@pytest.mark.parametrize("broken", [_no_correction, _flipped_correction])
def test_a_hit_point_without_the_implicit_correction_fails_the_check(monkeypatch, broken):
    field, names = _shapes()["sphere"]
    monkeypatch.setattr(st, "implicit_hit", broken)
    assert _relative_error(field, names) > 0.1


def _tiny_field() -> SDFField:
    torch.manual_seed(0)
    field = SDFField(
        SDFFieldConfig(
            encoding=HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4, max_resolution=8),
            hidden_dim=8,
        )
    ).double()
    with torch.no_grad():  # move it away from the initial sphere, so the grid and the MLP shape the surface
        field.encoding.embeddings.uniform_(-0.05, 0.05)
        field.mlp[-1].weight.normal_(0.0, 0.05)
    return field


def test_gradcheck_of_a_hash_grid_field_through_the_tracer():
    """Hit points and shaded pixels w.r.t. the MLP's last layer, grid entries the rays touch, and the rays'
    origins (camera poses)."""
    field = _tiny_field()
    cfg = dataclasses.replace(EXACT, step_scale=0.9)
    o, d = _rays([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.0, 0.05, 0.1], [0.1, 0.0, 0.0]])
    table = field.encoding.embeddings.detach().clone()
    out = _trace(field, cfg, (o, d))
    (g,) = torch.autograd.grad(out.rgb.sum(), field.encoding.embeddings)
    rows = g.abs().sum(1).nonzero()[:, 0][::2][:10]
    assert rows.numel() == 10

    class Functional(torch.nn.Module):
        def __init__(self, params):
            super().__init__()
            self.params = params

        def forward(self, x):
            return functional_call(field, self.params, (x,))

        def sdf(self, x):
            return self(x)[0]

    def fn(weight, delta, origins):
        params = {"mlp.2.weight": weight, "encoding.embeddings": table.index_add(0, rows, delta)}
        r = _trace(Functional(params), cfg, (origins, d))
        assert bool(r.hit.all())
        return r.points, r.rgb

    inputs = (
        field.mlp[-1].weight.detach().clone().requires_grad_(True),
        torch.zeros(rows.numel(), 2, dtype=F64, requires_grad=True),
        o.clone().requires_grad_(True),
    )
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ silhouettes
def _masks(field, cams, res, cfg):
    bg = Background(BackgroundConfig(kind="solid"))
    with torch.no_grad():
        out, _ = render_sdf(field, bg, cams, res, res, SHADER, SHADER.preview(), 1.0, cfg)
    return out.opacity


def _iou(a, b) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("silhouette", ["band", "idr", "none"])
def test_only_a_silhouette_term_moves_the_outline(silhouette):
    """A sphere fitted to another sphere's masks: with either mask term it gets there (held-out IoU >= 0.95);
    with none, the masks pass no gradient at all and it stays where it started."""
    res, hard = 24, SphereTraceConfig(silhouette="none")
    cfg = SphereTraceConfig(silhouette=silhouette, band_eps=0.03)
    target = SphereSDF(centre=(0.15, -0.1, 0.05), radius=0.45)
    train = turntable_cameras(6, elevation_deg=20.0, distance=2.5, fovy_deg=45.0)
    held = turntable_cameras(5, elevation_deg=-15.0, distance=2.5, fovy_deg=45.0, start_azimuth_deg=30.0)
    goal = _masks(target, train, res, hard)
    model = SphereSDF(radius=0.3)
    opt = torch.optim.Adam([model.centre, model.radius], lr=0.02)
    bg = Background(BackgroundConfig(kind="solid"))
    for _ in range(50):
        out, _ = render_sdf(model, bg, train, res, res, SHADER, SHADER.preview(), 1.0, cfg)
        loss = ((out.opacity - goal) ** 2).mean()
        if silhouette == "none":
            assert not loss.requires_grad
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    iou = _iou(_masks(model, held, res, hard), _masks(target, held, res, hard))
    print(f"{silhouette}: held-out IoU {iou:.4f}")
    assert iou >= 0.95 if silhouette != "none" else iou < 0.5


def test_the_band_form_keeps_the_forward_mask_exact_and_idr_softens_it():
    sphere = SphereSDF(radius=0.5)
    cams = turntable_cameras(1, elevation_deg=0.0, distance=2.5, fovy_deg=45.0)
    hard = _masks(sphere, cams, 32, SphereTraceConfig(silhouette="none"))
    band = _masks(sphere, cams, 32, SphereTraceConfig(silhouette="band"))
    soft = _masks(sphere, cams, 32, SphereTraceConfig(silhouette="idr", idr_alpha=50.0))
    assert torch.equal(band, hard)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    partial = (soft > 0.01) & (soft < 0.99)
    assert int(partial.sum()) > 0 and _iou(soft, hard) > 0.95


# ------------------------------------------------------------------------------------------- the representation
def _small_rep(**kw) -> SDFRepresentation:
    cfg = SDFConfig(
        field=SDFFieldConfig(
            encoding=HashGridConfig(n_levels=6, log2_hashmap_size=12, max_resolution=64), hidden_dim=16
        ),
        mesh_resolution=32,
        eikonal_points=256,
        **kw,
    )
    return SDFRepresentation(cfg, BackgroundConfig(kind="solid"))


def test_representation_renders_regularises_and_exports_a_watertight_mesh(tmp_path):
    rep = _small_rep()
    cams = turntable_cameras(2, elevation_deg=15.0, distance=2.5, fovy_deg=45.0)
    lit = ShadingParams(ShadingMode.LAMBERTIAN, cams.positions * 1.2)
    out = rep.render(cams, 16, 16, SHADER, lit, training=True)
    assert out.rgb.shape == (2, 16, 16, 3) and out.normal is not None and out.depth.shape == (2, 16, 16, 1)
    terms = rep.regularizers(out, 0)
    assert float(terms["eikonal"].detach()) < 1e-8  # the initial sphere is an exact distance
    loss = out.rgb.mean() + sum(terms.values())
    loss.backward()
    assert float(rep.field.mlp[-1].weight.grad.abs().sum()) > 0
    with torch.no_grad():  # previews: normals by a local autograd, no graph kept
        preview = rep.render(cams, 16, 16, SHADER, lit)
    assert not preview.rgb.requires_grad and preview.normal is not None

    asset = rep.asset()
    mesh = trimesh.Trimesh(asset.mesh.verts.numpy(), asset.mesh.faces.numpy(), process=True)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert abs(mesh.volume / (4 / 3 * torch.pi * 0.5**3) - 1) < 0.05  # the zero level, no threshold

    # a shape that touches the box is still closed: the box's faces count as outside
    with torch.no_grad():
        rep.field.mlp[-1].bias[0].fill_(-0.8)  # radius 1.3 > bound
    assert trimesh.Trimesh(
        *(t.numpy() for t in (rep.asset().mesh.verts, rep.asset().mesh.faces))
    ).is_watertight


def test_the_smoothness_term_is_small_on_a_sphere_and_large_on_ripples():
    """``|n(x) - n(x')|^2`` for neighbours 0.02 apart: on the initial sphere (r 0.5) the normals turn by
    0.02 / 0.5 rad at most, so the mean is below 2 (1 - cos 0.04) = 1.6e-3; random grid features make ripples."""
    torch.manual_seed(0)
    rep = _small_rep(lambda_smooth=1.0, smooth_radius=0.02)
    cams = turntable_cameras(2, elevation_deg=15.0, distance=2.5, fovy_deg=45.0)

    def smooth() -> torch.Tensor:
        out = rep.render(cams, 16, 16, SHADER, SHADER.preview(), training=True)
        return rep.regularizers(out, 0)["smooth"]

    sphere = float(smooth().detach())
    assert 0 < sphere < 1.6e-3
    with torch.no_grad():
        rep.field.encoding.embeddings.uniform_(-0.5, 0.5)
        rep.field.mlp[-1].weight.normal_(0.0, 0.3)
    rippled = smooth()
    print(f"smoothness: sphere {sphere:.2e}, rippled {float(rippled.detach()):.2e}")
    assert float(rippled.detach()) > 50 * sphere
    rippled.backward()
    assert float(rep.field.encoding.embeddings.grad.abs().sum()) > 0
    assert "smooth" not in _small_rep().regularizers(
        rep.render(cams, 8, 8, SHADER, SHADER.preview(), True), 0
    )


def test_unknown_silhouette_is_refused():
    with pytest.raises(ValueError, match="silhouette must be one of band, idr, none"):
        _small_rep(tracer=SphereTraceConfig(silhouette="soft"))


# --------------------------------------------------------------------------------------------- generate, CLI
SDF_TINY = {
    "coarse.representation": "sdf",
    "refine.steps": "0",
    "coarse.steps": "4",
    "coarse.sdf.field.encoding.n_levels": "8",
    "coarse.sdf.field.encoding.log2_hashmap_size": "14",
    "coarse.sdf.field.encoding.max_resolution": "128",
    "coarse.sdf.field.hidden_dim": "32",
    "coarse.sdf.mesh_resolution": "32",
    "coarse.sdf.eikonal_points": "512",
}


def test_generate_with_an_sdf_runs_end_to_end_and_exports(tiny_model_dir, tmp_path, capsys):
    """Acceptance (e) and (c): ``text3d generate "a mug" --set coarse.representation=sdf`` with the tiny model."""
    from conftest import TINY_OVERRIDES

    from text3d.cli import main

    sets = {**TINY_OVERRIDES, **SDF_TINY, "export.formats": "glb,ply"}
    args = ["generate", "a mug", "--model", str(tiny_model_dir), "--out", str(tmp_path)]
    code = main(args + [f"--set={k}={v}" for k, v in sets.items()])
    assert code == 0, capsys.readouterr().err
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed"
    assert (run / "checkpoints" / "coarse.safetensors").is_file()
    assert (run / "previews" / "latest.png").is_file()
    glb = next(Path(run, "mesh").glob("*.glb"))
    mesh = trimesh.load(glb, force="mesh")
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    assert len(mesh.faces) > 100 and mesh.is_watertight


def test_generate_with_an_sdf_then_a_dmtet_stage_runs_end_to_end(tiny_model_dir, tmp_path, capsys):
    """The refine stage starts from an SDF coarse stage as it does from a NeRF: both stages train and export."""
    from conftest import TINY_OVERRIDES

    from text3d.cli import main

    sets = {**TINY_OVERRIDES, **SDF_TINY, "refine.steps": "2", "export.formats": "glb"}
    args = ["generate", "a mug", "--model", str(tiny_model_dir), "--out", str(tmp_path)]
    code = main(args + [f"--set={k}={v}" for k, v in sets.items()])
    assert code == 0, capsys.readouterr().err
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["stages"]["refine"] == {"step": 2, "total": 2}
    assert (run / "checkpoints" / "refine.safetensors").is_file()
    mesh = trimesh.load(next(Path(run, "mesh").glob("*.glb")), force="mesh")
    assert len(mesh.faces) > 100


def _sdf_and_dmtet(colour_field=None):
    from text3d.fields.dmtet import DMTetConfig
    from text3d.representations.dmtet import DMTetRepresentation, DMTetRepresentationConfig

    sdf = _small_rep()
    cfg = DMTetRepresentationConfig(
        dmtet=DMTetConfig(resolution=32),
        colour_field=colour_field or sdf.cfg.field,
        background=BackgroundConfig(kind="solid"),
    )
    return sdf, DMTetRepresentation(cfg)


def test_dmtet_starts_at_an_sdfs_zero_level_with_its_colour():
    """A fresh SDF field is exactly a sphere of radius ``init_radius`` (0.5): the DMTet mesh it starts is that
    sphere up to linear interpolation along tet edges (at most ``edge^2 / 8r`` inside, 0.014 for the 16-cube
    grid's longest edges), outward-facing, with the SDF's albedo at every point."""
    from text3d.errors import ConfigError
    from text3d.fields.nerf import NeRFFieldConfig

    sdf, dmtet = _sdf_and_dmtet()
    with torch.no_grad():
        sdf.field.mlp[-1].bias[1:] = torch.tensor([0.3, -0.2, 0.1])  # a colour that is not the default
    dmtet.init_from(sdf)
    mesh = dmtet.dmtet.extract()
    radius = mesh.verts.norm(dim=-1)
    assert mesh.faces.shape[0] > 500
    assert (radius - 0.5).abs().max() < 0.015 and (radius - 0.5).abs().mean() < 0.004
    v = mesh.verts[mesh.faces]
    volume = torch.linalg.det(v).sum() / 6.0  # signed volume: positive when faces turn outwards
    assert abs(float(volume.detach()) - 4.0 / 3.0 * torch.pi * 0.125) < 0.02
    with torch.no_grad():
        assert torch.allclose(dmtet.field.albedo(mesh.verts), sdf.field.albedo(mesh.verts))

    with pytest.raises(ConfigError, match="colour field is a NeRFField"):
        _sdf_and_dmtet(NeRFFieldConfig(bound=sdf.cfg.field.bound))[1].init_from(sdf)
