"""Pose refinement's helpers beyond the per-image corrections: BARF's coarse-to-fine window over the hash grid's
levels, its decaying pose step, and the held-out poses' alignment to a frozen scene before they are scored.

The alignment is checked against a known answer: an analytic, differentiable scene (a sphere with a smooth colour
pattern, ray-traced in closed form) photographed from known cameras; the held-out cameras are then moved by 2° and
5 % of their distance, and the alignment must bring them back.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from text3d.cameras import turntable_cameras
from text3d.data.photoset import Intrinsics, PhotoSet
from text3d.fields.encoding import HashGridConfig, HashGridEncoding, coarse_to_fine_weights
from text3d.fitting import align_held_out_poses
from text3d.metrics import psnr
from text3d.objectives.photometric import PhotometricObjective
from text3d.recipes.fit import render_photo
from text3d.render.shading import UnlitShader
from text3d.representations.base import Representation
from text3d.representations.nerf import NeRFConfig, NeRFRepresentation
from text3d.training.stage import Stage
from text3d.training.trainer import schedule_lr
from text3d.views import RenderOutput
from text3d.views.photos import PhotoViews, PhotoViewsConfig, pose_preconditioner, se3_exp


def test_coarse_to_fine_weights_open_the_levels_coarsest_first():
    assert coarse_to_fine_weights(6, 0.0).tolist() == [1, 0, 0, 0, 0, 0]
    assert coarse_to_fine_weights(6, 1.0).tolist() == [1] * 6
    half = coarse_to_fine_weights(6, 0.5)  # a = 2.5: levels 1, 2 open, level 3 half-way, 4 and 5 closed
    assert half[:3].tolist() == [1, 1, 1] and half[3] == pytest.approx(0.5) and half[4:].tolist() == [0, 0]
    steps = torch.stack([coarse_to_fine_weights(6, p) for p in torch.linspace(0, 1, 21).tolist()])
    assert bool((steps[1:] >= steps[:-1]).all()), "a level never closes again"


def _four_photos() -> PhotoSet:
    intr = Intrinsics(*(torch.ones(4) for _ in range(4)), 8, 8)
    c2w = turntable_cameras(4, 20.0, 3.0, 40.0).c2w
    return PhotoSet(torch.zeros(4, 8, 8, 3), c2w, intr, list("abcd"), ["train"] * 4)


def test_the_pose_step_decays_geometrically_and_survives_a_checkpoint_round_trip():
    views = PhotoViews(_four_photos(), PhotoViewsConfig(refine_poses=True, pose_lr=1e-3, pose_lr_final=1e-5))
    still = nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([*views.param_groups(), {"params": [still], "lr": 0.01}])
    seen = []
    for step in (0, 50, 100):
        schedule_lr(opt, step, 101)
        seen.append(opt.param_groups[0]["lr"])
    assert seen == pytest.approx([1e-3, 1e-4, 1e-5], rel=1e-9)  # geometric: the midpoint is 1e-4, not 5e-4
    assert opt.param_groups[1]["lr"] == 0.01 and "lr_final" not in opt.param_groups[1]
    resumed = torch.optim.Adam([*views.param_groups(), {"params": [still], "lr": 0.01}])
    resumed.load_state_dict(opt.state_dict())  # the checkpoint holds lr_start: the schedule goes on from it
    schedule_lr(resumed, 50, 101)
    assert resumed.param_groups[0]["lr"] == pytest.approx(1e-4, rel=1e-9)
    constant = PhotoViews(
        _four_photos(), PhotoViewsConfig(refine_poses=True, pose_lr_final=0.0)
    ).param_groups()
    assert "lr_final" not in constant[0]


def test_camps_preconditioner_whitens_how_fast_each_pose_direction_moves_the_image():
    """For cameras 3 units from the scene, a turn and a sideways shift nearly cancel: the se(3) parameters' image
    Jacobian has eigenvalues from ~1 (turns) down to ~3e-3 (orbit-like and depth modes). Through the preconditioner
    every direction moves the image about equally (an independent point set, so not the one it was built from)."""
    c2w = turntable_cameras(3, 20.0, 3.0, 40.0).c2w.double()
    precond = pose_preconditioner(c2w)
    g = torch.Generator().manual_seed(5)
    pts = F.normalize(torch.randn(400, 3, generator=g, dtype=torch.float64), dim=-1)
    pts = torch.cat(
        [pts * torch.rand(400, 1, generator=g, dtype=torch.float64) ** (1 / 3), torch.ones(400, 1)], 1
    )
    for m, p in zip(c2w, precond, strict=True):

        def seen(xi, m=m):
            cam = torch.linalg.inv(m @ se3_exp(xi[None])[0]) @ pts.T.double()
            return (cam[:2] / -cam[2:3]).T.reshape(-1)

        jac = torch.autograd.functional.jacobian(seen, torch.zeros(6, dtype=torch.float64))
        raw = torch.linalg.eigvalsh(jac.T @ jac / 400)
        white = torch.linalg.eigvalsh(p.T @ (jac.T @ jac / 400) @ p)
        assert raw.max() / raw.min() > 100  # the problem: one step size cannot suit every direction
        assert white.max() / white.min() < 2.0 and 0.5 < float(white.max()) < 1.5
    views = PhotoViews(_four_photos(), PhotoViewsConfig(refine_poses=True, pose_preconditioning=True))
    assert views.precond.shape == (4, 6, 6) and torch.equal(views.corrected_c2w(), views.c2w)
    with torch.no_grad():
        views.pose_delta[0, 0] = 0.01
    step = se3_exp((views.precond[0] @ views.pose_delta[0])[None])[0]
    assert torch.allclose(views.corrected_c2w()[0], views.c2w[0] @ step)


def test_level_weights_scale_each_levels_features_and_reject_a_wrong_shape():
    enc = HashGridEncoding(
        HashGridConfig(n_levels=4, log2_hashmap_size=10, max_resolution=64, init_scale=0.5)
    )
    x = torch.rand(100, 3)
    full = enc(x).view(100, 4, 2)
    w = torch.tensor([1.0, 0.5, 0.25, 0.0])
    enc.set_level_weights(w)
    assert torch.equal(enc(x).view(100, 4, 2), full * w[:, None])
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        enc.set_level_weights(torch.ones(3))
    enc.set_level_weights(None)
    assert torch.equal(enc(x).view(100, 4, 2), full)


@pytest.mark.parametrize("kind", ["nerf", "sdf"])
def test_the_coarse_field_opens_its_levels_over_the_configured_steps_then_runs_unweighted(kind):
    from text3d.representations.sdf import SDFRepresentation

    if kind == "nerf":
        rep = NeRFRepresentation(NeRFConfig(coarse_to_fine=(10, 30)))
        rep.occupancy = None
    else:
        rep = SDFRepresentation(coarse_to_fine=(10, 30))
    seen = []
    for step in (0, 10, 20, 29, 30, 100):
        rep.before_step(step)
        seen.append(rep.field.encoding.level_weights)
    n = rep.field.encoding.cfg.n_levels
    assert seen[0].tolist() == seen[1].tolist() == [1.0] + [0.0] * (n - 1)
    assert 0 < float(seen[2].sum()) < n and float(seen[3].sum()) > float(seen[2].sum())
    assert seen[4] is None and seen[5] is None


class PatternedSphere(Representation):
    """A sphere of radius 0.7 with colour ``0.5 + 0.5 sin(5 p + phase)`` at surface point ``p``, over white; the
    silhouette is a soft step in the ray's distance to the centre. Differentiable in the rays, no parameters to
    learn (one dummy, so the stage has a device)."""

    name = "patterned-sphere"

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def param_groups(self) -> list[dict]:
        return [{"params": [self.dummy], "lr": 0.0}]

    def render(
        self, cameras, height, width, shader, shading, training=False, generator=None, with_normals=None
    ):
        o, d = cameras.origins.double(), F.normalize(cameras.directions.double(), dim=-1)
        b = (o * d).sum(-1, keepdim=True)
        disc = b * b - ((o * o).sum(-1, keepdim=True) - 0.49)
        t = -b - disc.clamp_min(1e-4).sqrt()
        p = o + t * d
        colour = 0.5 + 0.5 * torch.sin(5 * p + torch.tensor([0.0, 2.0, 4.0], dtype=p.dtype))
        alpha = torch.sigmoid(disc / 0.01)
        rgb = alpha * colour + (1 - alpha)
        return RenderOutput(rgb=rgb.float(), opacity=alpha.float(), depth=(alpha * t).float())


def project(c2w: torch.Tensor, pts: torch.Tensor, focal: float) -> torch.Tensor:
    """Pixel offsets from the image centre ``[P, 2]`` of world points ``[P, 3]`` seen by an OpenGL camera."""
    cam = (torch.linalg.inv(c2w) @ torch.cat([pts, torch.ones(len(pts), 1, dtype=pts.dtype)], 1).T).T
    return focal * cam[:, :2] / -cam[:, 2:3]


def reprojection_px(c2w: torch.Tensor, true_c2w: torch.Tensor, focal: float) -> torch.Tensor:
    """Mean pixel distance between where ``c2w`` and ``true_c2w`` ``[N, 4, 4]`` see 500 points of the sphere
    (the half facing the true camera); ``[N]``."""
    g = torch.Generator().manual_seed(1)
    sphere = 0.7 * F.normalize(torch.randn(500, 3, generator=g, dtype=torch.float64), dim=-1)
    out = []
    for a, b in zip(c2w, true_c2w, strict=True):
        pts = sphere[(sphere * b[:3, 3]).sum(-1) > 0]
        out.append((project(a, pts, focal) - project(b, pts, focal)).norm(dim=-1).mean())
    return torch.stack(out)


def test_held_out_poses_are_aligned_to_the_frozen_scene():
    torch.manual_seed(0)
    n, res = 12, 48
    cams = turntable_cameras(n, 20.0, 3.0, 40.0)
    focal = (res / 2) / math.tan(math.radians(40.0) / 2)
    full = torch.full((n,), focal)
    intr = Intrinsics(full, full.clone(), torch.full((n,), res / 2), torch.full((n,), res / 2), res, res)
    splits = ["test" if i % 3 == 0 else "train" for i in range(n)]
    photos = PhotoSet(
        torch.zeros(n, res, res, 3), cams.c2w.double(), intr, [f"r_{i}" for i in range(n)], splits
    )
    stage = Stage(
        "coarse",
        1,
        PatternedSphere(),
        PhotoViews(photos, PhotoViewsConfig(rays_per_step=1024), mode="rays"),
        UnlitShader(),
        PhotometricObjective(),
    )
    with torch.no_grad():
        images = torch.cat([render_photo(stage, photos, i).rgb for i in range(n)])
    photos = PhotoSet(images, photos.c2w, intr, photos.names, splits)

    test = photos.indices("test")
    kick = torch.zeros(len(test), 6, dtype=torch.float64)
    axes = F.normalize(torch.randn(len(test), 3, dtype=torch.float64), dim=-1)
    kick[:, :3] = axes * math.radians(2.0)
    kick[:, 3:] = F.normalize(torch.randn(len(test), 3, dtype=torch.float64), dim=-1) * 0.15
    moved = photos.c2w.clone()
    moved[test] = photos.c2w[test] @ se3_exp(kick)
    perturbed = PhotoSet(images, moved, intr, photos.names, splits)

    def score(ps: PhotoSet) -> float:
        with torch.no_grad():
            return sum(psnr(render_photo(stage, ps, int(i)).rgb[0], images[i]) for i in test) / len(test)

    before_px = reprojection_px(moved[test], photos.c2w[test], focal)
    aligned = align_held_out_poses(stage, perturbed, steps=400)
    after_px = reprojection_px(aligned.c2w[test], photos.c2w[test], focal)
    print(
        f"held-out reprojection error {before_px.mean():.2f} -> {after_px.mean():.3f} px, "
        f"PSNR {score(perturbed):.1f} -> {score(aligned):.1f} dB"
    )
    # the scene's own points land where the true cameras see them (a camera's rotation and a sideways shift
    # nearly trade off for an object this far away, so the pose itself is not the measure; the image is)
    assert float(before_px.min()) > 2.0 and float(after_px.max()) < 0.3
    assert score(aligned) > score(perturbed) + 15
    assert torch.equal(aligned.c2w[photos.indices("train")], photos.c2w[photos.indices("train")])
    assert stage.representation.dummy.requires_grad, "the scene's parameters are unfrozen afterwards"


def test_poses_from_structure_from_motion_are_refined_unless_turned_off():
    from text3d.recipes.fit import FitConfig, with_pose_refinement

    n = 4
    intr = Intrinsics(*(torch.ones(n) for _ in range(4)), 8, 8)
    posed = PhotoSet(torch.zeros(n, 8, 8, 3), torch.eye(4).repeat(n, 1, 1), intr, list("abcd"), ["train"] * n)
    solved = PhotoSet(
        posed.images, posed.c2w, intr, posed.names, posed.splits, meta={"sfm": {"registered": n}}
    )
    cfg = FitConfig()
    assert with_pose_refinement(cfg, posed) is cfg and not cfg.views.refine_poses
    assert with_pose_refinement(cfg, solved).views.refine_poses
    off = FitConfig(refine_sfm_poses=False)
    assert not with_pose_refinement(off, solved).views.refine_poses
