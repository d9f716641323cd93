"""Image metrics against a known answer: PSNR and SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
K1 = 0.01, K2 = 0.03, biased variances, mean over the windows that fit inside the image, as mip-NeRF's evaluation
computes it; torchmetrics also averages reflect-padded border windows, which moves the figure in the third digit),
and the accuracy of a fitted surface against a known one (Chamfer distance, normal angle)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def psnr(a: Float[Tensor, "*B H W C"], b: Float[Tensor, "*B H W C"], peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two images in ``[0, peak]`` (inf when they are equal)."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _gaussian(size: int, sigma: float, dtype, device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    a: Float[Tensor, "H W C"],
    b: Float[Tensor, "H W C"],
    peak: float = 1.0,
    size: int = 11,
    sigma: float = 1.5,
) -> float:
    """Mean structural similarity of two ``[H, W, C]`` images in ``[0, peak]`` (valid windows only, per channel,
    then averaged)."""
    x = a.double().permute(2, 0, 1)[:, None]  # [C, 1, H, W]
    y = b.double().permute(2, 0, 1)[:, None]
    g = _gaussian(size, sigma, x.dtype, x.device)
    win = (g[:, None] * g[None, :])[None, None]  # [1, 1, k, k]

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, win)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())


def surface_accuracy(
    points_a: Float[np.ndarray, "N 3"],
    normals_a: Float[np.ndarray, "N 3"],
    points_b: Float[np.ndarray, "M 3"],
    normals_b: Float[np.ndarray, "M 3"],
) -> dict[str, float]:
    """How close two surfaces are, from points sampled on each with their unit normals (outward).

    ``chamfer``: the symmetric mean nearest-neighbour distance, ``(mean_a d(a, B) + mean_b d(b, A)) / 2`` (in the
    points' units; sampling alone leaves a floor of about half the sample spacing, so sample densely), and its
    two halves as DTU names them: ``accuracy`` ``mean_a d(a, B)`` (is every point of ``a`` near ``b``: floaters,
    inner walls) and ``completeness`` ``mean_b d(b, A)`` (is all of ``b`` covered: holes, missing thin parts).
    ``normal_deg`` / ``normal_median_deg``: the angle between each point's normal and its nearest neighbour's on
    the other surface, averaged over both directions (the mean) or its median: a surface in the right place with
    wrong orientation (bumps, facets, flipped faces) shows here and not in the distance.
    """
    from scipy.spatial import cKDTree

    d_ab, i_ab = cKDTree(points_b).query(points_a)
    d_ba, i_ba = cKDTree(points_a).query(points_b)

    def angles(n: np.ndarray, m: np.ndarray) -> np.ndarray:
        return np.degrees(np.arccos(np.clip((n * m).sum(-1), -1.0, 1.0)))

    ang = np.concatenate([angles(normals_a, normals_b[i_ab]), angles(normals_b, normals_a[i_ba])])
    return {
        "chamfer": float(0.5 * (d_ab.mean() + d_ba.mean())),
        "accuracy": float(d_ab.mean()),
        "completeness": float(d_ba.mean()),
        "normal_deg": float(ang.mean()),
        "normal_median_deg": float(np.median(ang)),
    }
