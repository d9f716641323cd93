"""Posed photos as a view source: random ray batches (for ray-marched representations) or whole images (for
rasterized ones), with optional learnable per-image pose corrections.

Pose corrections are BARF's: each training image ``i`` gets an se(3) vector ``xi_i = (omega, tau)`` (axis-angle
rotation, translation), applied in the camera's own frame, ``c2w_i' = c2w_i @ exp(xi_i)``, and trained with its own
learning rate. They are parameters of this module, so checkpoints and exact resume include them, and
:meth:`PhotoViews.corrected_c2w` gives the poses to write back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from text3d.cameras import Cameras, RayBundle, turntable_cameras
from text3d.data.photoset import PhotoSet
from text3d.views import ViewBatch, ViewSource


@dataclass(frozen=True)
class PhotoViewsConfig:
    rays_per_step: int = 4096
    """Random pixels (from all training images) per step, when the stage marches rays."""
    images_per_step: int = 1
    """Whole training images per step, when the stage rasterizes."""
    jitter: bool = True
    """Rays through a random point of their pixel (the pixel's value is its box-filtered colour)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Masked photos are composited over this colour (NeRF-synthetic is fitted over white); the representation's
    background should be the same solid colour."""
    refine_poses: bool = False
    """Learn a pose correction per training image."""
    pose_lr: float = 1e-3
    """Adam step of the pose corrections (radians and scene units) at a stage's first step."""
    pose_preconditioning: bool = True
    """Learn the corrections in CamP's whitened coordinates (Park et al. 2023, :func:`pose_preconditioner`): a
    camera turned by a small angle and shifted sideways to match sees the object almost unchanged, so plain
    se(3) parameters have directions the photos pull on 100x more weakly than others, and Adam crawls along them.
    Issue 13 (c)'s scene, 1800 steps: 0.37° / 0.66 % with it, 1.70° / 2.91 % without (``bench/pose_bench.py``)."""
    pose_lr_final: float = 1e-4
    """... decaying geometrically to this at its last, as BARF decays it (1e-3 to 1e-5 over 200k steps; a tenth
    here, where a stage has thousands): a constant step keeps the poses jittering by about its size once the
    gradients are mostly noise. 0 keeps ``pose_lr`` throughout. Measured with preconditioning (1800 steps):
    0.37° decaying, 1.02° constant; without it the decay was slower (1.70° against 1.38°)."""


def se3_exp(xi: Float[Tensor, "N 6"]) -> Float[Tensor, "N 4 4"]:
    """``[N, 4, 4]`` rigid transforms from ``(omega, tau)``: Rodrigues' rotation of axis-angle ``omega`` and the
    translation ``tau`` (the first-order se(3) map; exact rotation, which is what BARF's refinement needs)."""
    omega, tau = xi[:, :3], xi[:, 3:]
    theta2 = (omega * omega).sum(-1, keepdim=True)
    theta = theta2.clamp_min(1e-12).sqrt()
    k = torch.zeros(xi.shape[0], 3, 3, dtype=xi.dtype, device=xi.device)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -omega[:, 2], omega[:, 1], -omega[:, 0]
    k = k - k.transpose(1, 2)
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)[..., None]
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))[..., None]
    rot = torch.eye(3, dtype=xi.dtype, device=xi.device) + a * k + b * (k @ k)
    out = torch.eye(4, dtype=xi.dtype, device=xi.device).repeat(xi.shape[0], 1, 1)
    out[:, :3, :3] = rot
    out[:, :3, 3] = tau
    return out


def pose_preconditioner(
    c2w: Float[Tensor, "N 4 4"], radius: float = 1.0, points: int = 512, damping: float = 1e-3
) -> Float[Tensor, "N 6 6"]:
    """CamP's preconditioner for right-multiplied se(3) corrections ``c2w @ exp(xi)`` (Park et al. 2023): for each
    camera, ``P = (S + damping * max eig(S) * I)^(-1/2)`` with ``S = J^T J / points``, where ``J`` is the Jacobian of
    where the camera sees ``points`` fixed points of the ball of ``radius`` around the origin (the normalised
    scene; those in front of it, or the identity when fewer than 16 are), in tangent units (``x / -z``,
    ``y / -z``: a turn of the camera by a small angle moves them by about that angle), with respect to ``xi``.
    Corrections ``xi = P psi`` move every whitened direction ``psi`` of the image equally, so one Adam step size
    suits all of them; turns keep about their scale (``P`` ~ 1 there).

    Computed in float64 from the initial poses, once: a function of the photo set, so a resumed run rebuilds it."""
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(points, 3, generator=g, dtype=torch.float64), dim=-1)
    pts = d * radius * torch.rand(points, 1, generator=g, dtype=torch.float64) ** (1 / 3)
    pts_h = torch.cat([pts, torch.ones(points, 1, dtype=torch.float64)], dim=-1)
    m = c2w.detach().double().cpu()

    def seen(poses: Tensor) -> Tensor:  # [N, 4, 4] -> [N, P, 2] tangent coordinates
        cam = torch.linalg.inv(poses) @ pts_h.T
        return (cam[:, :2] / -cam[:, 2:3]).transpose(1, 2)

    depth = -(torch.linalg.inv(m) @ pts_h.T)[:, 2]
    ahead = depth > 0.1 * depth.abs().amax(-1, keepdim=True)  # a camera inside the ball sees only these
    h = 1e-5  # central differences in float64: every camera at once, 12 projections (autograd took 0.5 s a camera)
    cols = []
    for k in range(6):
        step = torch.zeros(1, 6, dtype=torch.float64)
        step[0, k] = h
        cols.append((seen(m @ se3_exp(step)) - seen(m @ se3_exp(-step))) / (2 * h))
    jac = torch.where(ahead[..., None, None], torch.stack(cols, -1), 0.0)  # [N, P, 2, 6]
    count = ahead.sum(-1).clamp_min(1).to(torch.float64)
    cov = torch.einsum("npik,npil->nkl", jac, jac) / count[:, None, None]
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp_min(0) + damping * evals.amax(-1, keepdim=True)
    out = evecs @ torch.diag_embed(evals.rsqrt()) @ evecs.transpose(1, 2)
    out[ahead.sum(-1) < 16] = torch.eye(6, dtype=torch.float64)
    return out.to(c2w.dtype)


class PhotoViews(ViewSource):
    """The training images of a photo set, as random rays or whole images.

    Args:
        photos: the set (its ``"train"`` split is used; held-out images are never seen here).
        cfg: batch sizes, background, pose refinement.
        mode: ``"rays"`` (a ``[1, R, 1]`` :class:`RayBundle` of random pixels: the volume renderer) or
            ``"images"`` (whole photos as :class:`Cameras`: rasterizers; needs centred pinholes).
    """

    def __init__(self, photos: PhotoSet, cfg: PhotoViewsConfig = PhotoViewsConfig(), mode: str = "rays"):
        super().__init__()
        if mode not in ("rays", "images"):
            raise ValueError(f"mode must be 'rays' or 'images', got {mode!r}")
        train = photos.split("train")
        self.photos, self.cfg, self.mode = train, cfg, mode
        self.resolution = train.height
        bg = torch.tensor(cfg.background, dtype=train.images.dtype)
        # non-persistent: rebuilt from the photos, never checkpointed (they move with the stage, as instant-ngp
        # keeps its images on the device)
        self.register_buffer("targets", train.composite(bg).contiguous(), persistent=False)
        self.register_buffer("c2w", train.c2w.clone(), persistent=False)
        self.pose_delta = nn.Parameter(torch.zeros(len(train), 6), requires_grad=cfg.refine_poses)
        precondition = cfg.refine_poses and cfg.pose_preconditioning
        self.register_buffer(
            "precond", pose_preconditioner(train.c2w) if precondition else None, persistent=False
        )

    def param_groups(self) -> list[dict]:
        if not self.cfg.refine_poses:
            return []
        group = {"name": "poses", "params": [self.pose_delta], "lr": self.cfg.pose_lr}
        if self.cfg.pose_lr_final > 0:
            group["lr_final"] = self.cfg.pose_lr_final
        return [group]

    def corrected_c2w(self) -> Float[Tensor, "N 4 4"]:
        """Training poses with the learned corrections applied (the input poses when not refining)."""
        if not self.cfg.refine_poses:
            return self.c2w
        xi = self.pose_delta
        if self.precond is not None:  # pose_delta holds CamP's whitened coordinates
            xi = (self.precond.to(xi) @ xi[:, :, None])[:, :, 0]
        return self.c2w @ se3_exp(xi).to(self.c2w.dtype)

    def _rays(self, index: Int[Tensor, "R"], u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        intr = self.photos.intrinsics
        dirs_cam = intr.camera_directions(index.to(intr.fx.device), u, v)
        c2w = self.corrected_c2w()[index]
        dirs = (c2w[:, :3, :3] @ dirs_cam.to(c2w)[:, :, None])[:, :, 0]
        return c2w[:, :3, 3], F.normalize(dirs, dim=-1)

    def sample(self, step: int, device: torch.device) -> ViewBatch:
        n, h, w = len(self.photos), self.photos.height, self.photos.width
        if self.mode == "images":
            index = torch.randint(n, (self.cfg.images_per_step,))
            cams = self.cameras(index)
            target = self.targets[index].to(device)
            mask = None if self.photos.masks is None else self.photos.masks[index].to(device)
            return ViewBatch(cams.to(device), h, w, target=target, mask=mask)
        r = self.cfg.rays_per_step
        index = torch.randint(n, (r,))
        row, col = torch.randint(h, (r,)), torch.randint(w, (r,))
        if self.cfg.jitter:
            u, v = col + torch.rand(r), row + torch.rand(r)
        else:
            u, v = col + 0.5, row + 0.5
        origins, dirs = self._rays(index, u.to(self.c2w.dtype), v.to(self.c2w.dtype))
        target = self.targets[index, row, col]
        mask = None if self.photos.masks is None else self.photos.masks[index, row, col]
        bundle = RayBundle(origins[None, :, None].to(device), dirs[None, :, None].to(device))
        return ViewBatch(
            bundle,
            r,
            1,
            target=target[None, :, None].to(device),
            mask=None if mask is None else mask[None, :, None].to(device),
        )

    def cameras(self, index: Int[Tensor, "B"] | None = None) -> Cameras:
        """Training cameras (corrected poses) as :class:`Cameras`, for rasterizers (centred pinholes only)."""
        base = self.photos.cameras()  # raises DataError for intrinsics Cameras cannot represent
        c2w = self.corrected_c2w()
        if index is not None:
            base, c2w = _take(base, index), c2w[index]
        return Cameras(c2w, base.fovy, base.elevation, base.azimuth, base.distance)

    def preview_cameras(self, n: int, device: torch.device) -> Cameras:
        """A turntable around the scene's centre at the photos' mean distance and field of view."""
        pos = self.c2w[:, :3, 3]
        dist = float(pos.norm(dim=-1).mean())
        fovy = float(torch.rad2deg(self.photos.intrinsics.fovy).mean())
        elev = float(torch.rad2deg(torch.asin((pos[:, 1] / pos.norm(dim=-1)).clamp(-1, 1))).mean())
        return turntable_cameras(n, elev, dist, fovy, device=device)

    def silhouette_cameras(self, n: int, device: torch.device) -> Cameras:
        """``n`` training cameras spread over the set (the views whose silhouettes the data fixes)."""
        try:
            cams = self.cameras()
        except Exception:  # off-centre or distorted intrinsics: the turntable stands in
            return self.preview_cameras(n, device)
        pick = torch.linspace(0, len(self.photos) - 1, min(n, len(self.photos))).round().long()
        return _take(cams, pick).to(device)


def _take(cams: Cameras, index: Tensor) -> Cameras:
    return Cameras(
        cams.c2w[index], cams.fovy[index], cams.elevation[index], cams.azimuth[index], cams.distance[index]
    )
