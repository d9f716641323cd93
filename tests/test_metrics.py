"""PSNR and SSIM against direct computations from their definitions (float64, window by window)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from text3d.metrics import psnr, ssim


def _ssim_by_definition(a: np.ndarray, b: np.ndarray) -> float:
    """Every 11x11 window that fits, Gaussian weights (sigma 1.5), biased moments, each channel, then the mean."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for c in range(a.shape[2]):
        for i in range(a.shape[0] - 10):
            for j in range(a.shape[1] - 10):
                pa, pb = a[i : i + 11, j : j + 11, c], b[i : i + 11, j : j + 11, c]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
                cov = (w * pa * pb).sum() - ma * mb
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_its_definition_and_psnr_its_formula():
    rng = np.random.default_rng(0)
    a = rng.random((20, 24, 3))
    b = np.clip(a + 0.1 * rng.normal(size=a.shape), 0, 1)
    assert ssim(torch.tensor(a), torch.tensor(b)) == pytest.approx(_ssim_by_definition(a, b), abs=1e-12)
    assert ssim(torch.tensor(a), torch.tensor(a)) == pytest.approx(1.0, abs=1e-12)
    # a mean shift lowers SSIM through the luminance term only: a broken window (no Gaussian) would not match
    assert ssim(torch.tensor(a), torch.tensor(np.clip(a + 0.2, 0, 1))) < 0.99
    mse = float(((a - b) ** 2).mean())
    assert psnr(torch.tensor(a), torch.tensor(b)) == pytest.approx(10 * math.log10(1 / mse), abs=1e-9)
    assert psnr(torch.tensor(a), torch.tensor(a)) == math.inf
