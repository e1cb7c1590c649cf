r"""Background/foreground separation of a video, robust-PCA style.

With frames as columns, :math:`V \in \mathbb{R}^{D \times T}` (``D`` = pixels x channels),

.. math:: \min_X \; \|V - X\|_1 + \lambda'\, R(X)

``X`` is the low-rank background and ``V - X`` the sparse foreground. The Gram matrix is
only ``T x T``, so exact spectra are cheap. Two solvers:

- ``threshold`` (default): the inexact augmented Lagrangian method of robust PCA (Lin,
  Chen & Ma 2010) for :math:`R(L) + \mu\|S\|_1` s.t. :math:`V = L + S`, whose singular-value
  step is :func:`lrrtool.core.prox.reweighted_threshold` through the ``T x T`` Gram matrix
  (``reg=nuclear`` is exactly PCP; other penalties reweight it, as IRNN does). The
  sparsity weight is robust PCA's :math:`\mu = 1/\sqrt{\max(D, T)}`, scaled by ``lam``.
- ``adam``: the EDLRR paper's route, Adam on :math:`\frac{1}{DT}\|V - X\|_1 + \lambda R(X)`
  with any estimator (:func:`default_lambda` is the same robust-PCA balance).

Chunks: a long video is solved chunk by chunk; ``memory`` (background frames of the
previous chunk) is appended as extra columns, so the background carries across chunks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.core import Progress, SolveResult, minimize
from lrrtool.core.prox import reweighted_threshold
from lrrtool.errors import LRRError
from lrrtool.tasks.settings import SolverSettings

#: Copies of the ``D x T`` chunk each solver holds at once (for chunk sizing).
WORKING_COPIES = {"threshold": 6, "adam": 7}


@dataclass(frozen=True)
class SeparateSettings(SolverSettings):
    """``lam``: None = robust PCA's balance (see the module docstring); for ``threshold``
    a number multiplies that default, for ``adam`` it is the weight itself. ``iters`` None:
    100 (threshold, stops earlier at relative residual ``tol``) or 300 (adam)."""

    lam: float | None = None
    iters: int | None = None
    lr: float = 0.01
    tol: float = 1e-5
    #: Foreground mask: seed and growth thresholds, in units of the residual's robust std
    #: (see :func:`foreground_mask`).
    threshold: float = 4.0
    grow: float = 2.5

    choice_defaults: ClassVar[dict[str, dict[str, object]]] = {"threshold": {"iters": 100}, "adam": {"iters": 300}}

    def validate(self) -> None:
        super().validate()
        if self.lam is not None and not self.lam > 0:
            raise LRRError(f"--lam must be > 0, got {self.lam}")


def default_lambda(pixels: int, frames: int) -> float:
    """Robust PCA's ``||L||_* + ||S||_1 / sqrt(max(D, T))`` (Candès et al. 2011) rewritten for
    the mean-normalised L1 term: ``lam = sqrt(max(D, T)) / (D T)``."""
    return math.sqrt(max(pixels, frames)) / (pixels * frames)


def separate(
    frames: Tensor,
    settings: SeparateSettings = SeparateSettings(),
    *,
    memory: Tensor | None = None,
    callback: Callable[[Progress], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor, SolveResult]:
    """Split ``frames`` ``(T, C, H, W)`` in ``[0, 1]`` into background, foreground, mask.

    Args:
        frames: the video chunk.
        settings: see :class:`SeparateSettings`.
        memory: optional ``(M, C, H, W)`` background frames of the previous chunk, solved
            with the chunk as extra columns (not returned).
        callback: solver progress.

    Returns:
        ``(background (T,C,H,W), foreground (T,C,H,W) = frames - background, mask (T,H,W)
        bool (see :func:`foreground_mask`), result)``.
    """
    settings.validate()
    settings = settings.resolved()
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise LRRError(f"need frames of shape (T, C, H, W), got {tuple(frames.shape)}")
    T = frames.shape[0]
    stack = frames if memory is None else torch.cat([frames, memory.to(frames)])
    if stack.shape[0] < 2:
        stack = torch.cat([stack, stack])
    V = stack.reshape(stack.shape[0], -1).mT  # (D, T')
    if settings.solver == "threshold":
        X, result = _ialm(V, settings, callback)
    else:
        X, result = _adam(V, settings, callback)
    with torch.no_grad():
        bg = X[:, :T].clamp(0, 1).mT.reshape(frames.shape)
        fg = frames - bg
        mask = foreground_mask(fg, settings.threshold, settings.grow)
    return bg, fg, mask, result


def foreground_mask(foreground: Tensor, threshold: float = 4.0, grow: float = 2.5, steps: int = 10) -> Tensor:
    r"""Binary mask ``(T, H, W)`` of a sparse part ``(T, C, H, W)`` by hysteresis.

    ``r`` = ``|foreground|`` maximised over channels; :math:`\hat s = 1.4826\,
    \mathrm{median}(r)` its robust standard deviation over the chunk. Pixels with
    ``r > threshold * s`` (and > 2/255) are seeds; the mask then grows ``steps`` times
    into 8-neighbours with ``r > grow * s`` (and > 1/255), as Canny's edge hysteresis does.
    """
    residual = foreground.abs().amax(dim=1)
    noise = 1.4826 * residual.median()
    mask = residual > torch.clamp(threshold * noise, min=2 / 255)
    candidates = residual > torch.clamp(grow * noise, min=1 / 255)
    for _ in range(steps):
        mask = (F.max_pool2d(mask.unsqueeze(1).to(residual.dtype), 3, 1, 1).squeeze(1) > 0) & candidates
    return mask


def _adam(V: Tensor, s: SeparateSettings, callback: Callable[[Progress], None] | None) -> tuple[Tensor, SolveResult]:
    D, T = V.shape
    lam = default_lambda(D, T) if s.lam is None else s.lam
    reg = s.regularizer()
    X = V.median(dim=1, keepdim=True).values.expand(D, T).clone().requires_grad_(True)

    def objective() -> Tensor:
        return (V - X).abs().mean() + lam * reg(X)

    result = minimize(objective, [X], iters=s.iters, lr=s.lr, callback=callback)
    return X.detach(), result


def _ialm(V: Tensor, s: SeparateSettings, callback: Callable[[Progress], None] | None) -> tuple[Tensor, SolveResult]:
    r"""Inexact ALM (Lin et al. 2010, Algorithm 5) with the penalty's reweighted threshold.

    ``L = prox_{R/mu}(V - S + Y/mu)``, ``S = shrink_{w/mu}(V - L + Y/mu)``,
    ``Y += mu (V - L - S)``, ``mu *= 1.5`` up to ``1e7 mu_0``; stops when
    ``||V - L - S||_F <= tol ||V||_F``. Holds ``V, L, S, Y`` and one temporary.
    """
    began = time.perf_counter()
    D, T = V.shape
    penalty = s.regularizer().function.penalty
    weight = (s.lam or 1.0) / math.sqrt(max(D, T))
    spectral = torch.linalg.eigvalsh(V.mT @ V)[-1].clamp_min(0).sqrt()
    if not float(spectral) > 0:
        raise LRRError("the video is blank (all frames zero): nothing to separate")
    norm_v = V.norm()
    mu = 1.25 / spectral
    mu_max = mu * 1e7
    Y = V / torch.maximum(spectral, V.abs().max() / weight)
    S = torch.zeros_like(V)
    iters = s.iters
    history: list[tuple[int, float]] = []
    residual = math.inf
    step = 0
    for step in range(1, iters + 1):
        L = reweighted_threshold(V - S + Y / mu, penalty, 1 / mu)
        S = V - L + Y / mu
        S = S.sign() * (S.abs() - weight / mu).clamp_min(0)
        Z = V - L - S
        Y = Y + mu * Z
        mu = torch.clamp(mu * 1.5, max=mu_max)
        residual = float(Z.norm() / norm_v)
        if not math.isfinite(residual):
            raise LRRError(f"robust PCA diverged at iteration {step} (NaN/Inf); try --solver adam or another --reg")
        history.append((step, residual))
        if callback is not None:
            callback(Progress(step, iters, residual, float(1 / mu)))
        if residual <= s.tol:
            break
    return L, SolveResult(step, residual, residual <= s.tol, time.perf_counter() - began, history)
