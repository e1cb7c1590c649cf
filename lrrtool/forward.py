r"""Forward models: how an observation ``y`` was made from the clean signal ``x``.

Each model knows its data term :math:`f(x)` (``value``), its gradient (``grad``), the
proximal map of ``t f`` (``prox``) and the projection onto what is known exactly
(``project``; the identity when nothing is). Solvers use only these four, so one solver
serves every task:

- :class:`Inpainting`: ``y`` observed where ``missing`` is False,
  :math:`f(x) = \tfrac12\|M \odot (x - y)\|^2` with ``M`` the observed pixels, and the
  observed pixels known exactly (``project`` copies them in).
- :class:`GaussianNoise`: :math:`y = x + n`, :math:`n \sim \mathcal N(0, \sigma^2)`,
  :math:`f(x) = \|x - y\|^2 / 2\sigma^2`.
- :class:`SparseNoise`: :math:`y = x + s` with ``s`` sparse (robust PCA's foreground),
  :math:`f(x) = \|x - y\|_1`.

Pure torch; any shape, dtype and device (the mask broadcasts over leading dimensions).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from lrrtool.errors import LRRError


def soft_threshold(x: Tensor, t: float, out: Tensor | None = None) -> Tensor:
    r""":math:`\mathrm{sign}(x)\max(|x| - t, 0)`, the proximal map of :math:`t\|\cdot\|_1`,
    as :math:`x - \mathrm{clamp}(x, -t, t)` (the same values, two passes); into ``out``
    when given (a buffer other than ``x``)."""
    return torch.sub(x, torch.clamp(x, -t, t, out=out), out=out)


class ForwardModel(ABC):
    """A data term :math:`f(x)` for the observation ``observed`` (see the module docstring)."""

    observed: Tensor

    @abstractmethod
    def value(self, x: Tensor) -> Tensor:
        """:math:`f(x)`, a differentiable scalar."""

    @abstractmethod
    def grad(self, x: Tensor) -> Tensor:
        r""":math:`\nabla f(x)`, shaped like ``x``."""

    @abstractmethod
    def prox(self, v: Tensor, t: float) -> Tensor:
        r""":math:`\arg\min_x t f(x) + \tfrac12\|x - v\|^2`, shaped like ``v``."""

    def project(self, x: Tensor) -> Tensor:
        """``x`` with what the observation fixes exactly put back (identity by default)."""
        return x

    def gradient_step(self, x: Tensor, step: float) -> Tensor:
        r""":math:`x - \eta\nabla f(x)` with :math:`\eta` = ``step``."""
        return x - step * self.grad(x)

    def __call__(self, x: Tensor) -> Tensor:
        return self.value(x)


class Inpainting(ForwardModel):
    """Pixels of ``observed`` ``(..., H, W)`` are known where ``missing`` (bool ``(H, W)``, or
    ``(T, 1, H, W)`` for a video ``(T, C, H, W)``) is False."""

    def __init__(self, observed: Tensor, missing: Tensor) -> None:
        shapes = (observed.shape[-2:], (observed.shape[0], 1, *observed.shape[-2:]) if observed.ndim == 4 else None)
        if missing.dtype != torch.bool or missing.shape not in shapes:
            raise LRRError(
                f"the mask must be bool of shape {tuple(observed.shape[-2:])}, got {missing.dtype} "
                f"{tuple(missing.shape)}",
                parameter="mask",
            )
        self.missing = missing.to(observed.device)
        self.observed = observed.masked_fill(self.missing, 0)
        self.known = (~self.missing).to(observed.dtype)

    def value(self, x: Tensor) -> Tensor:
        return 0.5 * ((x - self.observed) * self.known).square().sum()

    def grad(self, x: Tensor) -> Tensor:
        return (x - self.observed) * self.known

    def prox(self, v: Tensor, t: float) -> Tensor:
        return torch.where(self.missing, v, (v + t * self.observed) / (1 + t))

    def project(self, x: Tensor) -> Tensor:
        return torch.where(self.missing, x, self.observed)


class GaussianNoise(ForwardModel):
    """``observed = x + n`` with white Gaussian noise of standard deviation ``sigma`` (> 0)."""

    def __init__(self, observed: Tensor, sigma: float) -> None:
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise LRRError(f"sigma must be a finite number > 0, got {sigma!r}", parameter="sigma")
        self.observed, self.sigma = observed, float(sigma)

    def value(self, x: Tensor) -> Tensor:
        return (x - self.observed).square().sum() / (2 * self.sigma**2)

    def grad(self, x: Tensor) -> Tensor:
        return (x - self.observed) / self.sigma**2

    def prox(self, v: Tensor, t: float) -> Tensor:
        return (self.sigma**2 * v + t * self.observed) / (self.sigma**2 + t)

    def gradient_step(self, x: Tensor, step: float) -> Tensor:
        # The same step, written as feedback of the removed noise: x + (step / sigma^2)(y - x).
        return x + (step / self.sigma**2) * (self.observed - x)


class SparseNoise(ForwardModel):
    """``observed = x + s`` with ``s`` sparse: the L1 data term of robust PCA."""

    def __init__(self, observed: Tensor) -> None:
        self.observed = observed

    def value(self, x: Tensor) -> Tensor:
        return (x - self.observed).abs().sum()

    def grad(self, x: Tensor) -> Tensor:
        return (x - self.observed).sign()

    def prox(self, v: Tensor, t: float) -> Tensor:
        return self.observed + soft_threshold(v - self.observed, t)


#: Forward models by name (contract tests and docs).
FORWARD_MODELS: dict[str, type[ForwardModel]] = {
    "inpainting": Inpainting,
    "gaussian-noise": GaussianNoise,
    "sparse-noise": SparseNoise,
}
