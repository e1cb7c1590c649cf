r"""Truncated series for a penalty ``h``: Taylor, Laguerre and Chebyshev.

Every series produces a :class:`ScaledPolynomial`: :math:`h(\sigma) \approx p(\sigma/s)`
with :math:`p(t) = \sum_{k=0}^{d} c_k P_k(t)` in a basis with the three-term recurrence

.. math:: P_0 = 1,\quad P_{k+1}(t) = (\alpha_k t + \beta_k) P_k(t) - \gamma_k P_{k-1}(t),

and :math:`p(0)` subtracted so that zero singular values cost nothing (``h(0) = 0``).
The same recurrence is evaluated on a vector of singular values (elementwise) or on a
symmetric matrix :math:`T = (S^\top S)^{1/2}/s` (matmuls only), whose trace is then
:math:`\sum_i p(\sigma_i/s)`. Recurrences are used instead of monomial coefficients
because Chebyshev or Laguerre coefficients converted to monomials cancel catastrophically
in float32 at the degrees needed.

- ``chebyshev``: interpolation of ``h`` on ``[0, s]`` at Chebyshev–Lobatto points, with
  ``s`` a bound on :math:`\sigma_1`. Near-minimax; the default.
- ``laguerre``: the EDLRR paper's expansion :math:`c_k = \int_0^\infty L_k(x) e^{-x}
  h(\ell x)\,dx` (Gauss–Laguerre quadrature), with the length ``ell`` tied to ``s``
  so that :math:`[0, \sigma_1]` maps to ``[0, span]``.
- ``taylor``: the paper's Maclaurin series. Its coefficients cannot follow ``s``; it is
  only valid where the truncation error is small, and the estimators refuse matrices
  whose :math:`\sigma_1` lies beyond that.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from lrrtool.core.penalties import Penalty
from lrrtool.errors import LRRError

MAX_DEGREE = 64


class Basis(ABC):
    """A polynomial basis in ``t`` given by its recurrence coefficients."""

    @abstractmethod
    def recurrence(self, k: int) -> tuple[float, float, float]:
        """``(alpha_k, beta_k, gamma_k)`` of ``P_{k+1} = (alpha_k t + beta_k) P_k - gamma_k P_{k-1}``."""


class MonomialBasis(Basis):
    def recurrence(self, k: int) -> tuple[float, float, float]:
        return 1.0, 0.0, 0.0


class ShiftedChebyshevBasis(Basis):
    """Chebyshev polynomials of the first kind on ``[0, 1]``: ``T_k(2t - 1)``."""

    def recurrence(self, k: int) -> tuple[float, float, float]:
        return (2.0, -1.0, 0.0) if k == 0 else (4.0, -2.0, 1.0)


@dataclass(frozen=True)
class LaguerreBasis(Basis):
    """Laguerre polynomials ``L_k(span * t)``."""

    span: float

    def recurrence(self, k: int) -> tuple[float, float, float]:
        return -self.span / (k + 1), (2 * k + 1) / (k + 1), k / (k + 1)


@dataclass
class ScaledPolynomial:
    r""":math:`q(\sigma) = p(\sigma/s) - p(0)`, :math:`p = \sum_k c_k P_k`.

    ``coeffs`` has shape ``(..., d + 1)`` and ``scale`` shape ``(...)``: one polynomial per
    matrix of a batch.
    """

    basis: Basis
    coeffs: Tensor
    scale: Tensor

    @property
    def degree(self) -> int:
        return self.coeffs.shape[-1] - 1

    def _basis_values(self, t: Tensor):
        """Yield ``(k, P_k(t))`` elementwise."""
        prev, cur = torch.zeros_like(t), torch.ones_like(t)
        yield 0, cur
        for k in range(self.degree):
            a, b, g = self.basis.recurrence(k)
            prev, cur = cur, (a * t + b) * cur - g * prev
            yield k + 1, cur

    def at_zero(self) -> Tensor:
        """``p(0)`` per batch element, shape ``(...)``."""
        zero = torch.zeros((), dtype=self.coeffs.dtype, device=self.coeffs.device)
        return sum(self.coeffs[..., k] * pk for k, pk in self._basis_values(zero))

    def __call__(self, sigma: Tensor) -> Tensor:
        """Elementwise ``q(sigma)`` for ``sigma`` of shape ``(..., n)``; differentiable."""
        t = sigma / self.scale.unsqueeze(-1)
        c = self.coeffs.unsqueeze(-2)
        total = sum(c[..., k] * pk for k, pk in self._basis_values(t))
        return total - self.at_zero().unsqueeze(-1)

    def matrix(self, t_matrix: Tensor) -> Tensor:
        """``q`` applied to symmetric ``T = B/s`` (shape ``(..., n, n)``), as a matrix.

        ``d - 1`` matmuls. ``T`` must already be divided by ``scale``.
        """
        eye = torch.eye(t_matrix.shape[-1], dtype=t_matrix.dtype, device=t_matrix.device)
        c = self.coeffs[..., None, None]
        prev, cur = torch.zeros_like(t_matrix), eye.expand_as(t_matrix)
        total = (c[..., 0, :, :] - self.at_zero()[..., None, None]) * eye
        for k in range(self.degree):
            a, b, g = self.basis.recurrence(k)
            nxt = a * (t_matrix if k == 0 else t_matrix @ cur) + b * cur - g * prev
            prev, cur = cur, nxt
            total = total + c[..., k + 1, :, :] * cur
        return total

    def trace(self, t_matrix: Tensor) -> Tensor:
        """``tr q(T)`` per batch element, shape ``(...)``."""
        return self.matrix(t_matrix).diagonal(dim1=-2, dim2=-1).sum(-1)

    def derivative_matrix(self, t_matrix: Tensor) -> Tensor:
        r"""``q'(B)`` in sigma units, i.e. :math:`p'(T)/s`, for symmetric ``T = B/s``."""
        eye = torch.eye(t_matrix.shape[-1], dtype=t_matrix.dtype, device=t_matrix.device)
        c = self.coeffs[..., None, None]
        zeros = torch.zeros_like(t_matrix)
        prev, cur = zeros, eye.expand_as(t_matrix)  # P_{k-1}, P_k
        dprev, dcur = zeros, zeros  # P'_{k-1}, P'_k
        total = zeros
        for k in range(self.degree):
            a, b, g = self.basis.recurrence(k)
            t_cur = t_matrix if k == 0 else t_matrix @ cur
            t_dcur = zeros if k == 0 else t_matrix @ dcur
            nxt = a * t_cur + b * cur - g * prev
            dnxt = a * t_dcur + b * dcur + a * cur - g * dprev
            prev, cur, dprev, dcur = cur, nxt, dcur, dnxt
            total = total + c[..., k + 1, :, :] * dcur
        return total / self.scale[..., None, None]


class Series(ABC):
    """A truncated series of a penalty, re-fitted for each scale ``s >= sigma_1``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    default_degree: ClassVar[int]

    def __init__(self, penalty: Penalty, degree: int | None = None) -> None:
        if penalty.indicator:
            raise LRRError(f"{self.name}-{penalty.name}: the rank indicator has no series; use 'rank'")
        degree = self.default_degree if degree is None else degree
        if not isinstance(degree, int) or not 1 <= degree <= MAX_DEGREE:
            raise LRRError(
                f"degree must be an integer in 1..{MAX_DEGREE} for the {self.name} series, got {degree!r}",
                parameter="degree",
            )
        self.penalty = penalty
        self.degree = degree
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, ...]] = {}

    def _constants(self, like: Tensor) -> tuple[Tensor, ...]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = tuple(c.to(device=like.device, dtype=like.dtype) for c in self._float64_constants())
        return self._cache[key]

    @abstractmethod
    def _float64_constants(self) -> tuple[Tensor, ...]:
        """Fixed CPU float64 tensors this series needs (nodes, fitting matrices)."""

    @abstractmethod
    def polynomial(self, scale: Tensor) -> ScaledPolynomial:
        """The series on ``[0, scale]``; ``scale`` has shape ``(...)``, one per matrix."""

    def check_scale(self, scale: Tensor) -> None:
        """Raise ``LRRError`` if the series cannot be trusted up to ``scale``.

        Re-fitted series (Chebyshev, Laguerre) follow ``scale`` and are always valid.
        """
        return None


class ChebyshevSeries(Series):
    name = "chebyshev"
    summary = "Chebyshev interpolation on [0, sigma_1] (near-minimax, default)"
    default_degree = 16

    def _float64_constants(self) -> tuple[Tensor, ...]:
        d = self.degree
        j = torch.arange(d + 1, dtype=torch.float64)
        nodes = (1 + torch.cos(math.pi * j / d)) / 2  # t_j in [0, 1], t_d = 0
        # Discrete Chebyshev transform at Lobatto points: c = M f.
        weights = torch.ones(d + 1, dtype=torch.float64)
        weights[0] = weights[-1] = 0.5
        fit = (2 / d) * torch.cos(math.pi * torch.outer(j, j) / d) * weights
        fit[0] /= 2
        fit[-1] /= 2
        return nodes, fit

    def polynomial(self, scale: Tensor) -> ScaledPolynomial:
        nodes, fit = self._constants(scale)
        values = self.penalty.h(scale.unsqueeze(-1) * nodes)
        return ScaledPolynomial(ShiftedChebyshevBasis(), values @ fit.mT, scale)


class LaguerreSeries(Series):
    name = "laguerre"
    summary = "Laguerre expansion (EDLRR paper), sigma_1 mapped to x = span"
    default_degree = 16
    #: Where sigma_1 lands on the Laguerre axis, per unit of degree; chosen by
    #: ``python bench/series.py`` (worst relative error over the penalties, sigma_1/gamma 0.1 to 100).
    span_per_degree = 0.5
    quadrature_nodes = 100

    @property
    def span(self) -> float:
        return self.span_per_degree * self.degree

    def _float64_constants(self) -> tuple[Tensor, ...]:
        q = self.quadrature_nodes
        # Golub–Welsch: Gauss–Laguerre nodes/weights from the Jacobi matrix.
        k = torch.arange(q, dtype=torch.float64)
        jacobi = torch.diag(2 * k + 1) + torch.diag(k[1:], 1) + torch.diag(k[1:], -1)
        nodes, vecs = torch.linalg.eigh(jacobi)
        weights = vecs[0] ** 2
        basis = LaguerreBasis(1.0)
        rows, prev, cur = [torch.ones_like(nodes)], torch.zeros_like(nodes), torch.ones_like(nodes)
        for i in range(self.degree):
            a, b, g = basis.recurrence(i)
            prev, cur = cur, (a * nodes + b) * cur - g * prev
            rows.append(cur)
        fit = torch.stack(rows) * weights  # c_k = sum_q w_q L_k(x_q) h(ell x_q)
        return nodes, fit

    def polynomial(self, scale: Tensor) -> ScaledPolynomial:
        nodes, fit = self._constants(scale)
        ell = scale / self.span
        values = self.penalty.h(ell.unsqueeze(-1) * nodes)
        return ScaledPolynomial(LaguerreBasis(self.span), values @ fit.mT, scale)


class TaylorSeries(Series):
    name = "taylor"
    summary = "Maclaurin series (EDLRR paper); valid only up to a fixed sigma"
    default_degree = 20
    #: Relative truncation error that defines the valid range.
    tolerance = 0.01

    def __init__(self, penalty: Penalty, degree: int | None = None) -> None:
        super().__init__(penalty, degree)
        series = penalty.taylor(self.degree)
        if series is None:
            raise LRRError(
                f"taylor-{penalty.name}: h has no Maclaurin series at 0 "
                f"(use chebyshev-{penalty.name} or laguerre-{penalty.name})"
            )
        self.monomials, radius, natural = series
        self.valid_sigma = self._valid_range(radius, natural)

    def _valid_range(self, radius: float, natural: float) -> float:
        """Largest sigma up to which the truncation error stays below ``tolerance``."""
        sigma = natural * torch.logspace(-4, 3, 2000, dtype=torch.float64)
        sigma = sigma[sigma < radius]
        exact = self.penalty.h(sigma)
        approx = sum(a * sigma ** (k + 1) for k, a in enumerate(self.monomials))
        bad = (approx - exact).abs() > self.tolerance * exact.abs()
        if not bad.any():
            return float(sigma[-1])
        first = int(bad.nonzero()[0])
        if first == 0:
            raise LRRError(f"taylor-{self.penalty.name}: degree {self.degree} is too low to be accurate anywhere")
        return float(sigma[first - 1])

    def _float64_constants(self) -> tuple[Tensor, ...]:
        rho = self.valid_sigma
        return (torch.tensor([0.0] + [a * rho ** (k + 1) for k, a in enumerate(self.monomials)], dtype=torch.float64),)

    def polynomial(self, scale: Tensor) -> ScaledPolynomial:
        (coeffs,) = self._constants(scale)
        rho = torch.full_like(scale, self.valid_sigma)
        return ScaledPolynomial(MonomialBasis(), coeffs.expand(*scale.shape, -1), rho)

    def check_scale(self, scale: Tensor) -> None:
        largest = float(scale.max()) if scale.numel() else 0.0
        if largest > self.valid_sigma:
            raise LRRError(
                f"taylor-{self.penalty.name} (degree {self.degree}) is accurate only for singular values "
                f"up to {self.valid_sigma:.4g}, but this matrix has sigma_1 of about {largest:.4g}; "
                f"use chebyshev-{self.penalty.name} or laguerre-{self.penalty.name}, or a larger gamma/degree"
            )


def exact_polynomial(penalty: Penalty, scale: Tensor) -> ScaledPolynomial | None:
    """``h`` itself as a :class:`ScaledPolynomial` when it is a polynomial (nuclear, integer p)."""
    monomials = penalty.polynomial()
    if monomials is None:
        return None
    powers = torch.arange(len(monomials) + 1, dtype=scale.dtype, device=scale.device)
    base = torch.tensor([0.0, *monomials], dtype=scale.dtype, device=scale.device)
    coeffs = base * scale.unsqueeze(-1) ** powers
    return ScaledPolynomial(MonomialBasis(), coeffs, scale)


SERIES: dict[str, type[Series]] = {cls.name: cls for cls in (TaylorSeries, LaguerreSeries, ChebyshevSeries)}
