r"""Gaussian denoising with a low-rank prior on groups of similar patches.

``Y`` is the noisy image, ``σ`` the noise level (in ``[0, 1]`` units here), ``G_g`` a
``K x D`` group of similar patches, centred by its mean patch. Two solvers:

- ``threshold`` (default): WNNM's scheme (Gu et al. 2014) with any penalty. Each step
  feeds back the noise removed so far, :math:`Y_k = X_{k-1} + \delta (Y - X_{k-1})`,
  re-estimates the remaining noise of each group from its own patches ``P``,
  :math:`\sigma_k = \rho\sqrt{|\sigma^2 - \mathrm{mean}_P(Y - Y_k)^2|}`
  (:math:`\sigma_1 = \sigma`), shrinks every group of
  :math:`Y_k` with :func:`lrrtool.core.prox.reweighted_threshold` (threshold
  :math:`\lambda\sqrt{n}\sigma_k^2`, weights :math:`h'(\hat\sigma)` with
  :math:`\hat\sigma^2 = \max(\sigma^2 - n\sigma_k^2, 0)`, :math:`n = \max(K, D)`, the
  noise energy per eigenvalue of the smaller Gram matrix; for :math:`K \ge D` and
  ``reg=lnn`` this is exactly WNNM's weighting) and averages the patches back.
- ``adam``: the paper's route, Adam on
  :math:`\frac{1}{2\sigma^2}\|X - Y\|_F^2 + \lambda' \sum_g R(G_g(X) - \bar G_g(X))`.

Colour: all channels of a patch form one vector (one low-rank structure per group).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor

from lrrtool.core import Progress, SolveResult, minimize
from lrrtool.core.prox import reweighted_threshold
from lrrtool.errors import LRRError
from lrrtool.tasks.patches import PatchGroups, all_patches, group_indices
from lrrtool.tasks.settings import SolverSettings


@dataclass(frozen=True)
class DenoiseSettings(SolverSettings):
    """Settings of :func:`denoise`; ``lam`` and ``iters`` None take the solver's default;
    ``patch`` None is 6 for grey and 5 for colour images (``D = C p^2`` = 36 and 75) and
    ``group`` None is 48 for grey and 64 for colour, the measured best (``bench/denoise.py``)."""

    reg: str = "lnn"
    lam: float | None = None
    iters: int | None = None
    lr: float = 0.01
    patch: int | None = None
    group: int | None = None
    stride: int = 4
    window: int = 15
    regroup_every: int = 2
    search_step: int = 1
    feedback: float = 0.1
    rescale: float = 0.52
    refine: int = 0

    default_gamma: ClassVar[float | None] = 1e-3  # singular values of [0, 1] patch groups
    choice_defaults: ClassVar[dict[str, dict[str, object]]] = {
        "threshold": {"lam": 2.8, "iters": 12},
        "adam": {"lam": 1.0, "iters": 150},
    }
    at_least_one: ClassVar[tuple[str, ...]] = ("iters", "patch", "group", "stride", "window", "regroup_every")

    def validate(self) -> None:
        super().validate()
        if not self.resolved().lam >= 0:
            raise LRRError(f"--lam must be >= 0, got {self.lam}")


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
    """Denoise ``noisy`` ``(C, H, W)`` in ``[0, 1]`` with noise level ``sigma`` (``[0, 1]`` units).

    Returns ``(clean (C, H, W) in [0, 1], solve_result)``.
    """
    if not sigma > 0:
        raise LRRError(f"the noise level must be > 0, got {sigma}")
    if noisy.ndim != 3:
        raise LRRError(f"expected an image of shape (C, H, W), got {tuple(noisy.shape)}")
    grey = noisy.shape[0] == 1
    if settings.patch is None:
        settings = replace(settings, patch=6 if grey else 5)
    if settings.group is None:
        settings = replace(settings, group=48 if grey else 64)
    settings.validate()
    settings = settings.resolved()
    if min(noisy.shape[-2:]) < settings.patch:
        raise LRRError(f"the image ({noisy.shape[-1]}x{noisy.shape[-2]}) is smaller than one patch")
    solve = _threshold if settings.solver == "threshold" else _adam
    clean, result = solve(noisy, sigma, settings, callback)
    return clean.clamp(0, 1), result


def _threshold(
    noisy: Tensor, sigma: float, s: DenoiseSettings, callback: Callable[[Progress], None] | None
) -> tuple[Tensor, SolveResult]:
    """WNNM iterations; ``loss`` in the result is the last noise estimate ``sigma_k``, mean over the groups."""
    began = time.perf_counter()
    penalty = s.regularizer().function.penalty
    x = noisy
    groups_of: PatchGroups | None = None
    level = sigma
    history: list[tuple[int, float]] = []
    for step in range(s.iters):
        y = x + s.feedback * (noisy - x)
        if step % s.regroup_every == 0:
            groups_of = PatchGroups(
                y, patch=s.patch, group=s.group, stride=s.stride, window=s.window, search_step=s.search_step
            )
        if step:
            level = remaining_noise(noisy, y, sigma, groups_of, s.rescale)
        groups = groups_of.gather(y)
        mean = groups.mean(dim=-2, keepdim=True)
        # Noise adds about max(K, D) sigma^2 to each eigenvalue of the small Gram matrix.
        n = max(groups.shape[-2:])
        tau = s.lam * math.sqrt(n) * level**2
        shrunk = reweighted_threshold(groups - mean, penalty, tau, n * level**2, refine=s.refine)
        x = groups_of.average(shrunk + mean)
        x = x.where(groups_of.covered, y)
        mean_level = float(torch.as_tensor(level).mean())
        history.append((step + 1, mean_level))
        if callback is not None:
            callback(Progress(step + 1, s.iters, mean_level, s.feedback))
    return x, SolveResult(s.iters, mean_level, False, time.perf_counter() - began, history)


def remaining_noise(noisy: Tensor, current: Tensor, sigma: float, groups: PatchGroups, rescale: float) -> Tensor:
    r"""Noise level left in ``current`` for each group ``(G,)``, estimated on the group's own
    pixels ``P``: :math:`\rho\sqrt{|\sigma^2 - \mathrm{mean}_P (Y - Y_k)^2|}`.

    WNNM takes the mean over the reference patch alone; over the whole group it is less
    noisy and measured better (``bench/denoise.py`` images at sigma 25: moon 36.28 ->
    36.62, camera 29.94 -> 29.87, coins 28.71 -> 28.70 dB; chelsea sigma 50 29.32 ->
    29.36). One level for the whole image was 0.03-0.27 dB worse than either."""
    removed = all_patches((noisy - current).square(), groups.patch).mean(dim=-1)[groups.index].mean(dim=-1)
    return rescale * (sigma**2 - removed).abs().sqrt()


def _adam(
    noisy: Tensor, sigma: float, s: DenoiseSettings, callback: Callable[[Progress], None] | None
) -> tuple[Tensor, SolveResult]:
    reg = s.regularizer()
    index = group_indices(noisy, patch=s.patch, group=s.group, stride=s.stride, window=s.window)
    X = noisy.clone().requires_grad_(True)
    # lam is relative to the noise: the penalty weight grows with sigma like the data term shrinks.
    weight = s.lam * sigma * (s.patch**2 * noisy.shape[0]) ** 0.5

    def objective() -> Tensor:
        rows = all_patches(X, s.patch)[index]
        fidelity = (X - noisy).square().sum() / (2 * sigma**2)
        return fidelity + weight / sigma**2 * reg(rows - rows.mean(dim=1, keepdim=True))

    result = minimize(objective, [X], iters=s.iters, lr=s.lr, callback=callback)
    return X.detach(), result
