r"""Gaussian denoising with a low-rank prior on groups of similar patches.

.. math:: \min_X \; \frac{1}{2\sigma^2}\|X - Y\|_F^2 + \lambda \sum_g R\big(G_g(X) - \bar G_g(X)\big)

``Y`` is the noisy image, ``σ`` the noise level (in ``[0, 1]`` units here), ``G_g`` a
``K x D`` group of similar patches (found once on the noisy image), centred by its mean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from lrrtool.core import Progress, SolveResult, minimize
from lrrtool.errors import LRRError
from lrrtool.tasks.patches import all_patches, group_indices
from lrrtool.tasks.settings import RegularizerSettings


@dataclass(frozen=True)
class DenoiseSettings(RegularizerSettings):
    lam: float = 1.0
    iters: int = 150
    lr: float = 0.01
    patch: int = 6
    group: int = 16
    stride: int = 3
    window: int = 10


def estimate_sigma(image: Tensor) -> float:
    """Noise level in ``[0, 1]`` units: median absolute deviation of the finest diagonal
    Haar detail coefficients / 0.6745 (Donoho & Johnstone), averaged over channels."""
    x = image[..., : image.shape[-2] // 2 * 2, : image.shape[-1] // 2 * 2]
    detail = (x[..., ::2, ::2] - x[..., 1::2, ::2] - x[..., ::2, 1::2] + x[..., 1::2, 1::2]) / 2
    return float(detail.flatten(1).abs().median(dim=1).values.mean() / 0.6745)


def denoise(
    noisy: Tensor,
    sigma: float,
    settings: DenoiseSettings = DenoiseSettings(),
    *,
    callback: Callable[[Progress], None] | None = None,
) -> tuple[Tensor, SolveResult]:
    """Denoise ``noisy`` ``(C, H, W)`` in ``[0, 1]`` with noise level ``sigma`` (``[0, 1]`` units)."""
    if not sigma > 0:
        raise LRRError(f"the noise level must be > 0, got {sigma}")
    if not settings.lam >= 0:
        raise LRRError(f"--lam must be >= 0, got {settings.lam}")
    reg = settings.regularizer()
    index = group_indices(
        noisy, patch=settings.patch, group=settings.group, stride=settings.stride, window=settings.window
    )
    X = noisy.clone().requires_grad_(True)
    # lam is relative to the noise: the penalty weight grows with sigma like the data term shrinks.
    weight = settings.lam * sigma * (settings.patch**2 * noisy.shape[0]) ** 0.5

    def objective() -> Tensor:
        rows = all_patches(X, settings.patch)[index]
        fidelity = (X - noisy).square().sum() / (2 * sigma**2)
        return fidelity + weight / sigma**2 * reg(rows - rows.mean(dim=1, keepdim=True))

    result = minimize(objective, [X], iters=settings.iters, lr=settings.lr, callback=callback)
    return X.detach().clamp(0, 1), result
