r"""Inpainting: fill the masked pixels of an image by low-rank regularised completion.

Only the missing pixels are variables; observed pixels are copied into the result
unchanged. With :math:`X = M_{obs} \odot Y + M_{fill} \odot P` the objective over ``P`` is

.. math:: \mu \sum_{c} \|\Delta X_c\|_2^2 \;+\; \lambda \sum_g R\big(G_g(X) - \bar G_g(X)\big)

- :math:`\Delta` is the 5-point Laplacian: the first term alone is biharmonic
  inpainting, a smooth interpolant;
- ``model="patches"`` (default): :math:`G_g(X)` is a ``K x D`` group of similar patches
  (all channels jointly, so colours share one low-rank structure), centred by its mean
  patch :math:`\bar G_g` so that brightness is not penalised; groups are re-found on the
  current estimate every ``regroup_every`` steps;
- ``model="global"``: the EDLRR paper's model, each channel an ``H x W`` matrix.

Colour: channels are handled jointly in the patch model (one patch vector holds all
channels) and separately in the global model (one matrix per channel), as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.core import LowRankRegularizer, Progress, SolveResult, minimize
from lrrtool.errors import LRRError
from lrrtool.tasks.patches import all_patches, group_indices
from lrrtool.tasks.settings import RegularizerSettings

MODELS = ("patches", "global")


@dataclass(frozen=True)
class InpaintSettings(RegularizerSettings):
    """Settings of :func:`inpaint`; the defaults are the measured best (``bench/inpaint.py``)."""

    reg: str = "laplace"
    lam: float = 0.3
    model: str = "patches"
    smooth: float = 1.0
    iters: int = 200
    lr: float = 0.02
    patch: int = 6
    group: int = 16
    stride: int = 4
    window: int = 10
    regroup_every: int = 50

    default_gamma: ClassVar[float | None] = 0.5  # patch values in [0, 1]

    def validate(self) -> None:
        if self.model not in MODELS:
            raise LRRError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        if not self.lam >= 0:
            raise LRRError(f"--lam must be >= 0, got {self.lam}")
        if not self.smooth >= 0:
            raise LRRError(f"--smooth must be >= 0, got {self.smooth}")
        for name in ("patch", "group", "stride", "window", "regroup_every"):
            if getattr(self, name) < 1:
                raise LRRError(f"{name} must be >= 1, got {getattr(self, name)}")


def push_pull_fill(image: Tensor, fill: Tensor) -> Tensor:
    """Fast initial fill: mask-aware averages over a pyramid, finest known level wins.

    ``image`` ``(C, H, W)``, ``fill`` bool ``(H, W)``; returns ``(C, H, W)`` with observed
    pixels unchanged. Every missing pixel gets a value as long as one pixel is observed.
    """
    known = (~fill).to(image.dtype)[None, None]
    values = (image * known[0])[None]
    levels = [(values, known)]
    while min(levels[-1][1].shape[-2:]) > 1 and bool((levels[-1][1] == 0).any()):
        v, k = levels[-1]
        levels.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(k, 2, ceil_mode=True)))
    v, k = levels[-1]
    estimate = v / k.clamp_min(1e-12)
    for v, k in reversed(levels[:-1]):
        up = F.interpolate(estimate, size=v.shape[-2:], mode="bilinear", align_corners=False)
        estimate = torch.where(k > 0, v / k.clamp_min(1e-12), up)
    return torch.where(fill, estimate[0], image)


def laplacian_energy(x: Tensor) -> Tensor:
    r""":math:`\sum \|\Delta x\|^2` over interior pixels of ``(C, H, W)`` (replicate borders)."""
    padded = F.pad(x.unsqueeze(0), (1, 1, 1, 1), mode="replicate")[0]
    lap = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:] - 4 * x
    return lap.square().sum()


def inpaint(
    image: Tensor,
    fill: Tensor,
    settings: InpaintSettings = InpaintSettings(),
    *,
    callback: Callable[[Progress], None] | None = None,
) -> tuple[Tensor, SolveResult]:
    """Fill the pixels where ``fill`` is True.

    Args:
        image: ``(C, H, W)`` float tensor; values under ``fill`` are ignored.
        fill: bool ``(H, W)`` on the same device, True = missing.
        settings: see :class:`InpaintSettings`.
        callback: progress of the solver.

    Returns:
        ``(result, solve_result)``; ``result[:, ~fill] == image[:, ~fill]`` exactly.
    """
    settings.validate()
    if image.ndim != 3:
        raise LRRError(f"expected an image of shape (C, H, W), got {tuple(image.shape)}")
    if fill.shape != image.shape[-2:]:
        raise LRRError(f"mask shape {tuple(fill.shape)} does not match image {tuple(image.shape[-2:])}")
    fill = fill.to(device=image.device, dtype=torch.bool)
    missing = int(fill.sum())
    if missing == 0:
        raise LRRError("the mask marks no pixel to fill (is it inverted? see --invert-mask)")
    if missing == fill.numel():
        raise LRRError("the mask marks every pixel as missing: nothing is observed to fill from")
    reg = settings.regularizer()
    low_rank = reg if settings.model == "global" else _PatchGroupTerm(reg, settings, fill)
    observed = image.masked_fill(fill, 0)
    values = push_pull_fill(image, fill)[:, fill].clone().requires_grad_(True)

    def assemble() -> Tensor:
        x = observed.clone()
        x[:, fill] = values
        return x

    def objective() -> Tensor:
        x = assemble()
        loss = settings.smooth * laplacian_energy(x)
        if settings.lam > 0:
            loss = loss + settings.lam * low_rank(x)
        return loss

    result = minimize(objective, [values], iters=settings.iters, lr=settings.lr, callback=callback)
    with torch.no_grad():
        out = assemble().clamp(0, 1)
        out = torch.where(fill, out, image)
    return out, result


class _PatchGroupTerm:
    """``sum_g R(centred group g)``, with groups re-found every ``regroup_every`` calls."""

    def __init__(self, reg: LowRankRegularizer, settings: InpaintSettings, select: Tensor) -> None:
        self.reg, self.settings, self.select = reg, settings, select
        self.index: Tensor | None = None
        self.calls = 0

    def __call__(self, x: Tensor) -> Tensor:
        s = self.settings
        if self.index is None or self.calls % s.regroup_every == 0:
            with torch.no_grad():
                self.index = group_indices(
                    x.detach(), patch=s.patch, group=s.group, stride=s.stride, window=s.window, select=self.select
                )
        self.calls += 1
        rows = all_patches(x, s.patch)[self.index]  # (G, K, D)
        return self.reg(rows - rows.mean(dim=1, keepdim=True))
