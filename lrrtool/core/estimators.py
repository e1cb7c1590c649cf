r"""Estimators of :math:`\sum_i f(\sigma_i(S))` for a batch of matrices ``S`` of shape
``(..., m, n)``. Each returns one differentiable scalar: the sum over the batch.

``f`` is a :class:`SpectralFunction`: the exact penalty ``h`` or a truncated series of
it. Every estimator works on the Gram matrix of the smaller side, ``k = min(m, n)``.

- ``exact``: eigen-decomposition of the ``k x k`` Gram matrix, with the analytic gradient
  :math:`U\,\mathrm{diag}(f'(\sigma))V^\top`. The oracle, and the fastest on CPU.
- ``newton-schulz``: :math:`B \approx (S^\top S)^{1/2}` by Newton–Schulz, then the exact
  trace :math:`\mathrm{tr}\,f(B)` of the series (matmuls only, deterministic). Gradient
  :math:`S\,(S^\top S)^{-1/2} f'(B)`, using the inverse root the iteration gives for free.
- ``stochastic``: the EDLRR paper's estimator
  :math:`\frac1N\sum_j \langle P_S g_j, f(B) g_j\rangle` with Gaussian probes and the
  iterative pseudo-inverse, differentiated by autograd. Kept to reproduce the paper;
  unbiased but noisy, and never faster here (see ``bench/estimators.py``).
- ``auto``: ``exact`` on CPU and for small Gram matrices; ``newton-schulz`` on CUDA from
  ``k >= 512`` on (see :func:`choose_estimator`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from lrrtool.core.matfun import gram, gram_eigh, iterative_pinv, newton_schulz_sqrt, small_side, top_eigenvalue_bound
from lrrtool.core.penalties import Penalty
from lrrtool.core.series import ChebyshevSeries, ScaledPolynomial, Series, exact_polynomial
from lrrtool.errors import LRRError


@dataclass
class SpectralFunction:
    """``f = h`` (``series is None``) or a truncated series of ``h``."""

    penalty: Penalty
    series: Series | None = None

    def __post_init__(self) -> None:
        self._fallback: Series | None = None

    @property
    def name(self) -> str:
        return self.penalty.name if self.series is None else f"{self.series.name}-{self.penalty.name}"

    def elementwise(self, sigma: Tensor, scale: Tensor) -> Tensor:
        """``f(sigma)`` for ``sigma`` of shape ``(..., k)`` and ``sigma_1`` bound ``scale`` ``(...)``."""
        if self.series is None:
            return self.penalty.h(sigma)
        self.series.check_scale(scale)
        return self.series.polynomial(scale)(sigma)

    def value_and_derivative(self, sigma: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """``f(sigma)`` and ``f'(sigma)`` elementwise (detached), by autograd on the scalar
        function; ``sigma`` ``(..., k)``, ``scale`` ``(...)`` as in :meth:`elementwise`."""
        with torch.enable_grad():
            s = sigma.detach().requires_grad_(True)
            values = self.elementwise(s, scale)
            (slope,) = torch.autograd.grad(values.sum(), s, allow_unused=True)
        return values.detach(), torch.zeros_like(sigma) if slope is None else slope

    def polynomial(self, scale: Tensor) -> ScaledPolynomial:
        """``f`` as a polynomial on ``[0, scale]``: exact where ``h`` is one, else a series
        (the chosen one, or Chebyshev, the most accurate per degree)."""
        if self.penalty.indicator:
            raise LRRError("the rank indicator has no polynomial form")
        if self.series is not None:
            self.series.check_scale(scale)
            return self.series.polynomial(scale)
        exact = exact_polynomial(self.penalty, scale)
        if exact is not None:
            return exact
        if self._fallback is None:
            self._fallback = ChebyshevSeries(self.penalty)
        return self._fallback.polynomial(scale)


class _ExactSpectral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, S: Tensor, f: SpectralFunction) -> Tensor:
        S, transposed = small_side(S)
        eigenvalues, V = gram_eigh(gram(S))
        sigma = eigenvalues.clamp_min(0).sqrt()
        top = sigma[..., -1]
        if f.penalty.indicator:
            tol = max(S.shape[-2:]) * torch.finfo(S.dtype).eps * top
            values = (sigma > tol.unsqueeze(-1)).to(S.dtype)
            slope = torch.zeros_like(sigma)
        else:
            values, slope = f.value_and_derivative(sigma, top)
        # grad = U diag(f') V^T = S V diag(f'/sigma) V^T. Through the Gram matrix sigma is
        # only resolved to about sqrt(k eps) sigma_1: below that, directions get 0.
        cutoff = ((S.shape[-1] * torch.finfo(S.dtype).eps) ** 0.5 * top).unsqueeze(-1)
        weight = torch.where(sigma > cutoff, slope / sigma.clamp_min(torch.finfo(S.dtype).tiny), 0)
        ctx.save_for_backward(S, V, weight)
        ctx.transposed = transposed
        return values.sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        S, V, weight = ctx.saved_tensors
        grad = S @ ((V * weight.unsqueeze(-2)) @ V.mT)
        grad = grad * grad_out
        return (grad.mT if ctx.transposed else grad), None


class _NewtonSchulzSpectral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, S: Tensor, f: SpectralFunction, sqrt_iters: int, power_iters: int) -> Tensor:
        S, transposed = small_side(S)
        A = gram(S)
        scale = top_eigenvalue_bound(A, power_iters).sqrt()
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        Y, Z = newton_schulz_sqrt(A / (safe**2)[..., None, None], sqrt_iters)  # Y = B/s, Z = s B^-1
        if f.penalty.indicator:
            ctx.save_for_backward(S)
            ctx.transposed, ctx.poly = transposed, None
            return (Y @ Z).diagonal(dim1=-2, dim2=-1).sum()
        poly = f.polynomial(safe)
        T = Y * (safe / poly.scale)[..., None, None]  # B / poly.scale
        value = poly.trace(T)
        ctx.save_for_backward(S, T, Z / safe[..., None, None])  # Z/s = (S^T S)^{-1/2}
        ctx.transposed, ctx.poly = transposed, poly
        return torch.where(scale > 0, value, 0).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        if ctx.poly is None:
            (S,) = ctx.saved_tensors
            grad = torch.zeros_like(S)
        else:
            S, T, inverse_root = ctx.saved_tensors
            poly: ScaledPolynomial = ctx.poly
            grad = S @ (inverse_root @ poly.derivative_matrix(T)) * grad_out
        return (grad.mT if ctx.transposed else grad), None, None, None


class Estimator(ABC):
    """Computes ``sum over batch and i of f(sigma_i(S))`` as a differentiable scalar."""

    name: ClassVar[str]

    @abstractmethod
    def __call__(self, S: Tensor, f: SpectralFunction) -> Tensor: ...


class ExactEstimator(Estimator):
    name = "exact"

    def __call__(self, S: Tensor, f: SpectralFunction) -> Tensor:
        return _ExactSpectral.apply(S, f)


class NewtonSchulzEstimator(Estimator):
    name = "newton-schulz"

    def __init__(self, sqrt_iters: int = 24, power_iters: int = 12) -> None:
        self.sqrt_iters = _count("sqrt_iters", sqrt_iters)
        self.power_iters = _count("power_iters", power_iters)

    def __call__(self, S: Tensor, f: SpectralFunction) -> Tensor:
        return _NewtonSchulzSpectral.apply(S, f, self.sqrt_iters, self.power_iters)


class StochasticEstimator(Estimator):
    name = "stochastic"

    def __init__(
        self,
        probes: int = 64,
        pinv_iters: int = 40,
        sqrt_iters: int = 24,
        power_iters: int = 12,
        generator: torch.Generator | None = None,
    ) -> None:
        self.probes = _count("probes", probes)
        self.pinv_iters = _count("pinv_iters", pinv_iters)
        self.sqrt_iters = _count("sqrt_iters", sqrt_iters)
        self.power_iters = _count("power_iters", power_iters)
        self.generator = torch.Generator().manual_seed(0) if generator is None else generator

    def _probes(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        g = torch.randn(shape, generator=self.generator, dtype=like.dtype, device=self.generator.device)
        return g.to(like.device)

    def __call__(self, S: Tensor, f: SpectralFunction) -> Tensor:
        S, _ = small_side(S)
        A = gram(S)
        top = top_eigenvalue_bound(A, self.power_iters)
        safe = torch.where(top > 0, top, torch.ones_like(top))
        projector = A @ iterative_pinv(A, self.pinv_iters, safe)
        probes = self._probes((*A.shape[:-1], self.probes), A)
        if f.penalty.indicator:
            M = projector
        else:
            Y, _ = newton_schulz_sqrt(A / safe[..., None, None], self.sqrt_iters)
            poly = f.polynomial(safe.sqrt())
            M = projector @ poly.matrix(Y * (safe.sqrt() / poly.scale)[..., None, None])
        quad = (probes * (M @ probes)).sum(-2).mean(-1)
        return torch.where(top > 0, quad, 0).sum()


class AutoEstimator(Estimator):
    name = "auto"

    def __init__(self, **options) -> None:
        self._exact = ExactEstimator()
        self._ns = NewtonSchulzEstimator(**{k: v for k, v in options.items() if k in ("sqrt_iters", "power_iters")})

    def __call__(self, S: Tensor, f: SpectralFunction) -> Tensor:
        chosen = choose_estimator(S, f)
        return (self._ns if chosen == "newton-schulz" else self._exact)(S, f)


#: Smallest Gram side from which Newton–Schulz replaces the eigen-decomposition on CUDA.
CUDA_NEWTON_SCHULZ_MIN_SIDE = 512


def choose_estimator(S: Tensor, f: SpectralFunction) -> str:
    """The rule behind ``auto``.

    On CPU the ``k x k`` eigen-decomposition costs about as much as 3–4 ``k^3`` matmuls
    while Newton–Schulz needs ~75, so ``exact`` always wins there (``bench/estimators.py``).
    On CUDA, eigen-solvers are latency-bound and matmuls are not, so Newton–Schulz wins
    for large ``k``; the threshold is ``CUDA_NEWTON_SCHULZ_MIN_SIDE``. The rank indicator
    always uses ``exact``.
    """
    k = min(S.shape[-2:])
    if S.device.type == "cuda" and k >= CUDA_NEWTON_SCHULZ_MIN_SIDE and not f.penalty.indicator:
        return "newton-schulz"
    return "exact"


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LRRError(f"{name} must be a positive integer, got {value!r}")
    return value


ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls for cls in (AutoEstimator, ExactEstimator, NewtonSchulzEstimator, StochasticEstimator)
}
