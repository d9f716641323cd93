"""Image metrics against a known answer: PSNR and SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
K1 = 0.01, K2 = 0.03, biased variances, mean over the windows that fit inside the image, as mip-NeRF's evaluation
computes it; torchmetrics also averages reflect-padded border windows, which moves the figure in the third digit)."""

from __future__ import annotations

import math

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
    a: Float[Tensor, "H W C"], b: Float[Tensor, "H W C"], peak: float = 1.0, size: int = 11, sigma: float = 1.5
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
