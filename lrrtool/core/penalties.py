r"""Singular-value penalties :math:`R(S) = \sum_i h(\sigma_i(S))`.

A penalty knows its scalar function ``h`` (exact, elementwise, differentiable), the
Maclaurin coefficients of ``h`` (for the Taylor series) and, when ``h`` is itself a
polynomial in :math:`\sigma`, that polynomial. Singular values are in the units of the
matrix, so every scale parameter :math:`\gamma` below is in those units or their inverse,
as each class says. All penalties have :math:`h(0) = 0`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from lrrtool.errors import LRRError


def _positive(name: str, value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise LRRError(f"{name} must be a finite number > 0 for {what}, got {value}", parameter=name)
    return value


class Penalty(ABC):
    """Scalar singular-value penalty ``h``; subclasses set ``name`` and ``summary``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: Names of the keyword parameters this penalty accepts (``gamma`` or ``p``).
    parameters: ClassVar[tuple[str, ...]] = ()
    #: True for the rank indicator, whose gradient is zero almost everywhere.
    indicator: ClassVar[bool] = False

    @abstractmethod
    def h(self, sigma: Tensor) -> Tensor:
        """Elementwise ``h(sigma)`` for ``sigma >= 0`` of any shape; differentiable."""

    def taylor(self, degree: int) -> tuple[list[float], float, float] | None:
        """Maclaurin coefficients ``[a_1, ..., a_degree]`` in sigma units, the radius of
        convergence (``inf`` for entire functions) and a natural sigma scale; ``None``
        when ``h`` has no Maclaurin series."""
        return None

    def polynomial(self) -> list[float] | None:
        """Monomial coefficients ``[a_1, ..., a_d]`` when ``h`` is exactly that polynomial."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.parameters)
        return f"{type(self).__name__}({args})"


class _GammaPenalty(Penalty, ABC):
    parameters = ("gamma",)
    default_gamma: ClassVar[float] = 1.0
    #: The unit of gamma: that of the singular values, or its inverse (a rate).
    gamma_units: ClassVar[str] = "singular-value units"

    def __init__(self, gamma: float | None = None) -> None:
        self.gamma = _positive("gamma", self.default_gamma if gamma is None else gamma, self.name)


class Nuclear(Penalty):
    r"""Nuclear norm, :math:`h(\sigma) = \sigma` (convex envelope of the rank)."""

    name = "nuclear"
    summary = "sum of singular values (convex)"

    def h(self, sigma: Tensor) -> Tensor:
        return sigma

    def taylor(self, degree: int) -> tuple[list[float], float, float]:
        return [1.0] + [0.0] * (degree - 1), math.inf, 1.0

    def polynomial(self) -> list[float]:
        return [1.0]


class SchattenP(Penalty):
    r"""Schatten-p (quasi-)norm to the power p, :math:`h(\sigma) = \sigma^p`, ``p > 0``.

    ``p = 1`` is the nuclear norm; ``p < 1`` is non-convex and closer to the rank. For
    ``p < 1`` the gradient is unbounded at :math:`\sigma = 0`; singular values are clamped
    at the smallest normal number of the dtype to keep it finite.
    """

    name = "schatten-p"
    summary = "sum of sigma^p (p < 1: non-convex)"
    parameters = ("p",)

    def __init__(self, p: float | None = None) -> None:
        self.p = _positive("p", 0.5 if p is None else p, self.name)

    def h(self, sigma: Tensor) -> Tensor:
        if self.p < 1:
            sigma = sigma.clamp_min(torch.finfo(sigma.dtype).tiny)
        return sigma.pow(self.p)

    def _integer_power(self) -> int | None:
        return round(self.p) if abs(self.p - round(self.p)) < 1e-12 else None

    def taylor(self, degree: int) -> tuple[list[float], float, float] | None:
        k = self._integer_power()
        if k is None or k > degree:
            return None
        return [1.0 if i + 1 == k else 0.0 for i in range(degree)], math.inf, 1.0

    def polynomial(self) -> list[float] | None:
        k = self._integer_power()
        return None if k is None else [0.0] * (k - 1) + [1.0]


class Rank(Penalty):
    r"""Rank, :math:`h(\sigma) = 1[\sigma > \tau]` with the usual numerical tolerance
    :math:`\tau = \max(m, n)\,\epsilon\,\sigma_1`. Its gradient is zero: use it to
    measure, and a relaxation to optimise."""

    name = "rank"
    summary = "number of non-zero singular values (value only, zero gradient)"
    indicator = True

    def h(self, sigma: Tensor) -> Tensor:
        # Tolerance is applied by the estimator, which knows the matrix size.
        return (sigma > 0).to(sigma.dtype)


class GammaNuclear(_GammaPenalty):
    r""":math:`\gamma`-nuclear norm (Kang et al. 2015),
    :math:`h(\sigma) = (1+\gamma)\,\sigma / (\gamma + \sigma)`.

    ``gamma`` is in the units of the singular values: below it ``h`` grows like
    :math:`(1+\gamma)\sigma/\gamma`, above it ``h`` saturates at :math:`1 + \gamma`.
    """

    name = "gamma-nuclear"
    summary = "(1+g)s/(g+s), saturates above gamma"

    def h(self, sigma: Tensor) -> Tensor:
        return (1 + self.gamma) * sigma / (self.gamma + sigma)

    def taylor(self, degree: int) -> tuple[list[float], float, float]:
        g = self.gamma
        return [(1 + g) * (-1) ** (k + 1) / g**k for k in range(1, degree + 1)], g, g


class Laplace(_GammaPenalty):
    r"""Laplace penalty (Trzasko & Manduca 2008), :math:`h(\sigma) = 1 - e^{-\sigma/\gamma}`.

    ``gamma`` is in the units of the singular values: singular values well above it cost
    about 1 each (a rank count), well below it about :math:`\sigma/\gamma`.
    """

    name = "laplace"
    summary = "1 - exp(-s/gamma), a smooth rank count"

    def h(self, sigma: Tensor) -> Tensor:
        return -torch.expm1(-sigma / self.gamma)

    def taylor(self, degree: int) -> tuple[list[float], float, float]:
        g = self.gamma
        coeffs = [(-1) ** (k + 1) / (math.factorial(k) * g**k) for k in range(1, degree + 1)]
        return coeffs, math.inf, g


class LogNuclear(_GammaPenalty):
    r"""Log-nuclear norm, LNN (Peng et al. 2015), :math:`h(\sigma) = \log(1 + \sigma/\gamma)`.

    ``gamma`` is in the units of the singular values (``gamma = 1`` gives the original
    :math:`\log(1+\sigma)`): the penalty is linear below it, logarithmic above.
    """

    name = "lnn"
    summary = "log(1 + s/gamma)"

    def h(self, sigma: Tensor) -> Tensor:
        return torch.log1p(sigma / self.gamma)

    def taylor(self, degree: int) -> tuple[list[float], float, float]:
        g = self.gamma
        return [(-1) ** (k + 1) / (k * g**k) for k in range(1, degree + 1)], g, g


class Logarithm(_GammaPenalty):
    r"""Logarithm penalty (Friedman 2012),
    :math:`h(\sigma) = \log(\gamma\sigma + 1) / \log(\gamma + 1)`.

    ``gamma`` is in inverse units of the singular values (a rate): large ``gamma`` makes
    ``h`` a rank count above :math:`1/\gamma`; ``gamma -> 0`` gives the nuclear norm.
    """

    name = "logarithm"
    summary = "log(g s + 1)/log(g + 1)"
    gamma_units = "1 / singular-value units"

    def h(self, sigma: Tensor) -> Tensor:
        return torch.log1p(self.gamma * sigma) / math.log1p(self.gamma)

    def taylor(self, degree: int) -> tuple[list[float], float, float]:
        g, norm = self.gamma, math.log1p(self.gamma)
        coeffs = [(-1) ** (k + 1) * g**k / (k * norm) for k in range(1, degree + 1)]
        return coeffs, 1 / g, 1 / g


class ETP(_GammaPenalty):
    r"""Exponential-type penalty, ETP (Gao et al. 2011),
    :math:`h(\sigma) = (1 - e^{-\gamma\sigma}) / (1 - e^{-\gamma})`.

    ``gamma`` is in inverse units of the singular values: ``h`` saturates above
    :math:`1/\gamma`; ``gamma -> 0`` gives the nuclear norm.
    """

    name = "etp"
    summary = "(1 - exp(-g s))/(1 - exp(-g))"
    gamma_units = "1 / singular-value units"

    def h(self, sigma: Tensor) -> Tensor:
        return -torch.expm1(-self.gamma * sigma) / -math.expm1(-self.gamma)

    def taylor(self, degree: int) -> tuple[list[float], float, float]:
        g, norm = self.gamma, -math.expm1(-self.gamma)
        coeffs = [(-1) ** (k + 1) * g**k / (math.factorial(k) * norm) for k in range(1, degree + 1)]
        return coeffs, math.inf, 1 / g


class Geman(_GammaPenalty):
    r"""Geman penalty (Geman & Yang 1995), :math:`h(\sigma) = \sigma / (\sigma + \gamma)`.

    ``gamma`` is in the units of the singular values: ``h`` is half-saturated at
    :math:`\sigma = \gamma`.
    """

    name = "geman"
    summary = "s/(s + gamma)"

    def h(self, sigma: Tensor) -> Tensor:
        return sigma / (sigma + self.gamma)

    def taylor(self, degree: int) -> tuple[list[float], float, float]:
        g = self.gamma
        return [(-1) ** (k + 1) / g**k for k in range(1, degree + 1)], g, g


PENALTIES: dict[str, type[Penalty]] = {
    cls.name: cls for cls in (Nuclear, SchattenP, Rank, GammaNuclear, Laplace, LogNuclear, Logarithm, ETP, Geman)
}


def make_penalty(name: str, **params: float | None) -> Penalty:
    """Build a penalty by registry name; unknown names or parameters raise ``LRRError``."""
    cls = PENALTIES.get(name)
    if cls is None:
        raise LRRError(f"reg {name!r} is unknown; choose one of: {', '.join(PENALTIES)}", parameter="reg")
    given = {k: v for k, v in params.items() if v is not None}
    extra = sorted(set(given) - set(cls.parameters))
    if extra:
        takes = ", ".join(cls.parameters) or "no parameters"
        raise LRRError(f"{extra[0]} does not apply to penalty {name!r} (it takes {takes})", parameter=extra[0])
    return cls(**given)
