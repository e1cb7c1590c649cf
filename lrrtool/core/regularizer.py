r"""The public low-rank regulariser :math:`R(X) = \sum_b \sum_i h(\sigma_i(X_b))`."""

from __future__ import annotations

import torch
from torch import Tensor

from lrrtool.core.estimators import ESTIMATORS, Estimator, SpectralFunction
from lrrtool.core.penalties import PENALTIES, make_penalty
from lrrtool.core.series import SERIES
from lrrtool.errors import LRRError

_ESTIMATOR_OPTIONS = {
    "auto": ("sqrt_iters", "power_iters"),
    "exact": (),
    "newton-schulz": ("sqrt_iters", "power_iters"),
    "stochastic": ("probes", "pinv_iters", "sqrt_iters", "power_iters", "generator"),
}


def regularizer_names() -> list[str]:
    """Every valid ``reg`` string: each penalty, and each series prefix where it applies."""
    names = list(PENALTIES)
    for series in SERIES:
        names += [f"{series}-{p}" for p, cls in PENALTIES.items() if not cls.indicator]
    return names


def parse_reg(reg: str) -> tuple[str | None, str]:
    """Split ``"laguerre-laplace"`` into ``("laguerre", "laplace")``; no prefix gives ``None``."""
    for series in SERIES:
        if reg.startswith(series + "-"):
            return series, reg[len(series) + 1 :]
    return None, reg


class LowRankRegularizer(torch.nn.Module):
    r"""Differentiable generalised low-rank penalty :math:`\sum_i h(\sigma_i(X))`.

    Args:
        reg: penalty name (``nuclear``, ``schatten-p``, ``rank``, ``gamma-nuclear``,
            ``laplace``, ``lnn``, ``logarithm``, ``etp``, ``geman``), optionally prefixed by
            ``taylor-``, ``laguerre-`` or ``chebyshev-`` to evaluate ``h`` by that truncated
            series. Without a prefix ``h`` is exact where the estimator allows it
            (``exact`` always; ``nuclear`` and integer Schatten-p everywhere) and a
            Chebyshev series otherwise.
        estimator: ``auto``, ``exact``, ``newton-schulz`` or ``stochastic``.
        gamma: scale of the non-convex penalties (see each penalty's docstring for its unit).
        p: exponent of ``schatten-p``.
        degree: series degree (defaults: taylor 20, laguerre 16, chebyshev 16).
        probes, pinv_iters, sqrt_iters, power_iters, generator: estimator settings.

    ``reg(X)`` takes ``X`` of shape ``(..., m, n)`` (any float dtype and device) and
    returns a scalar: the penalty summed over the batch dimensions.

    Example:
        >>> reg = LowRankRegularizer("laguerre-laplace", estimator="newton-schulz", gamma=2.0)
        >>> X = torch.randn(40, 30, dtype=torch.float64, requires_grad=True)
        >>> reg(X).backward()
    """

    def __init__(
        self,
        reg: str = "nuclear",
        *,
        estimator: str = "auto",
        gamma: float | None = None,
        p: float | None = None,
        degree: int | None = None,
        probes: int | None = None,
        pinv_iters: int | None = None,
        sqrt_iters: int | None = None,
        power_iters: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        series_name, penalty_name = parse_reg(reg)
        if penalty_name not in PENALTIES:
            raise LRRError(f"reg {reg!r} is unknown; choose one of: {', '.join(regularizer_names())}", parameter="reg")
        penalty = make_penalty(penalty_name, gamma=gamma, p=p)
        if series_name is None and degree is not None:
            raise LRRError(f"degree applies to a series; use e.g. 'chebyshev-{penalty_name}'", parameter="degree")
        series = None if series_name is None else SERIES[series_name](penalty, degree)
        self.function = SpectralFunction(penalty, series)
        self.estimator = _make_estimator(
            estimator,
            probes=probes,
            pinv_iters=pinv_iters,
            sqrt_iters=sqrt_iters,
            power_iters=power_iters,
            generator=generator,
        )
        self.reg = reg

    def forward(self, X: Tensor) -> Tensor:
        if not isinstance(X, Tensor) or X.ndim < 2:
            raise LRRError(f"expected a tensor of shape (..., m, n), got {_describe(X)}")
        if not X.is_floating_point():
            raise LRRError(f"expected a real floating-point tensor, got dtype {X.dtype}")
        if X.shape[-1] == 0 or X.shape[-2] == 0:
            return X.sum() * 0
        return self.estimator(X, self.function)

    def extra_repr(self) -> str:
        return f"reg={self.reg!r}, penalty={self.function.penalty!r}, estimator={self.estimator.name!r}"


def _make_estimator(name: str, **options) -> Estimator:
    if name not in ESTIMATORS:
        raise LRRError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {name!r}", parameter="estimator")
    given = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(given) - set(_ESTIMATOR_OPTIONS[name]))
    if extra:
        raise LRRError(f"estimator {name!r} does not take {', '.join(extra)}")
    return ESTIMATORS[name](**given)


def _describe(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
