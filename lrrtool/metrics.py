"""Image quality metrics (pure torch): PSNR and SSIM on ``(C, H, W)`` in ``[0, 1]``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(estimate: Tensor, reference: Tensor, where: Tensor | None = None) -> float:
    """PSNR in dB for peak 1; ``where`` (bool ``(H, W)``) restricts it to those pixels."""
    error = (estimate.double() - reference.double()).square()
    if where is not None:
        error = error[:, where]
    mse = float(error.mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def ssim(estimate: Tensor, reference: Tensor) -> float:
    """Mean SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K = (0.01, 0.03), per channel."""
    x, y = estimate.double()[:, None], reference.double()[:, None]
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :])[None, None]

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, window)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(index.mean())
