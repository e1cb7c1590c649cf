r"""Background/foreground separation of a video, robust-PCA style.

With frames as columns, :math:`V \in \mathbb{R}^{D \times T}` (``D`` = pixels x channels),

.. math:: \min_X \; \tfrac{1}{DT}\|V - X\|_1 + \lambda\, R(X)

``X`` is the low-rank background and ``V - X`` the sparse foreground. The Gram matrix is
only ``T x T``, so even the exact estimator is cheap. ``λ`` defaults to the robust-PCA
choice :math:`1/\sqrt{\max(D, T)}` scaled to the per-entry mean of the L1 term.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lrrtool.core import Progress, SolveResult, minimize
from lrrtool.errors import LRRError
from lrrtool.tasks.settings import RegularizerSettings


@dataclass(frozen=True)
class SeparateSettings(RegularizerSettings):
    lam: float | None = None
    iters: int = 300
    lr: float = 0.01
    #: Foreground mask threshold, in units of the median absolute residual.
    threshold: float = 4.0


def default_lambda(pixels: int, frames: int) -> float:
    """Robust PCA's ``||L||_* + ||S||_1 / sqrt(max(D, T))`` (Candès et al. 2011) rewritten for
    the mean-normalised L1 term: ``lam = sqrt(max(D, T)) / (D T)``."""
    return math.sqrt(max(pixels, frames)) / (pixels * frames)


def separate(
    frames: Tensor,
    settings: SeparateSettings = SeparateSettings(),
    *,
    background: Tensor | None = None,
    callback: Callable[[Progress], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor, SolveResult]:
    """Split ``frames`` ``(T, C, H, W)`` in ``[0, 1]`` into background, foreground, mask.

    Args:
        frames: the video chunk.
        settings: see :class:`SeparateSettings`.
        background: optional start ``(C, H, W)`` (the previous chunk's median background).
        callback: solver progress.

    Returns:
        ``(background (T,C,H,W), foreground (T,C,H,W) = frames - background, mask (T,H,W)
        bool, result)``. A pixel is foreground when its residual, maximised over channels,
        exceeds ``threshold`` times the median absolute residual of the chunk (a robust
        noise scale), and at least 2/255.
    """
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise LRRError(f"need at least 2 frames of shape (T, C, H, W), got {tuple(frames.shape)}")
    T = frames.shape[0]
    V = frames.reshape(T, -1).mT  # (D, T)
    D = V.shape[0]
    lam = default_lambda(D, T) if settings.lam is None else settings.lam
    if not lam > 0:
        raise LRRError(f"--lam must be > 0, got {lam}")
    reg = settings.regularizer()
    start = V.median(dim=1, keepdim=True).values.expand(D, T) if background is None else background.reshape(D, 1)
    X = start.expand(D, T).clone().requires_grad_(True)

    def objective() -> Tensor:
        return (V - X).abs().mean() + lam * reg(X)

    result = minimize(objective, [X], iters=settings.iters, lr=settings.lr, callback=callback)
    with torch.no_grad():
        bg = X.clamp(0, 1).mT.reshape(frames.shape)
        fg = frames - bg
        residual = fg.abs().amax(dim=1)
        scale = residual.median()
        mask = residual > torch.clamp(settings.threshold * scale, min=2 / 255)
    return bg, fg, mask, result
