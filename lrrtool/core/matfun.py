r"""Matmul-only matrix functions: Gram matrix, a bound on :math:`\sigma_1`, the
Newton–Schulz square root and the Ben-Israel–Cohen pseudo-inverse.

Shapes: ``S`` is ``(..., m, n)``; Gram matrices are ``(..., k, k)`` with
``k = min(m, n)``. All functions are batched and device/dtype preserving.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def small_side(S: Tensor) -> tuple[Tensor, bool]:
    """``S`` oriented so that it has no more columns than rows, and whether it was transposed."""
    if S.shape[-2] < S.shape[-1]:
        return S.mT, True
    return S, False


def gram(S: Tensor) -> Tensor:
    r""":math:`S^\top S` for ``S`` of shape ``(..., m, n)`` with ``m >= n``: shape ``(..., n, n)``."""
    return S.mT @ S


def _start_vector(n: int, like: Tensor) -> Tensor:
    """A fixed, generic start vector (no RNG, same on every device)."""
    i = torch.arange(n, dtype=like.dtype, device=like.device)
    return 1 + 0.5 * torch.sin(1.7 * i + 0.3)


def top_eigenvalue_bound(G: Tensor, iters: int = 12, margin: float = 1.1) -> Tensor:
    r"""Detached estimate of :math:`\lambda_{\max}(G)` from above, shape ``(...)``.

    ``iters`` power iterations give a Rayleigh quotient (a lower bound that converges
    like :math:`(\lambda_2/\lambda_1)^{2k}`); it is multiplied by ``margin`` and capped by
    :math:`\|G\|_F`, which is always an upper bound. Zero matrices give 0.
    """
    with torch.no_grad():
        v = _start_vector(G.shape[-1], G).expand(*G.shape[:-1]).unsqueeze(-1)
        for _ in range(iters):
            w = G @ v
            v = w / w.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(G.dtype).tiny)
        rayleigh = (v.mT @ G @ v)[..., 0, 0]
        frobenius = torch.linalg.matrix_norm(G)
        return torch.minimum(rayleigh * margin, frobenius)


def newton_schulz_sqrt(A: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    r"""Coupled Newton–Schulz iteration for a symmetric PSD ``A`` with eigenvalues in ``[0, 1.9]``.

    .. math:: Y_0 = A,\ Z_0 = I,\quad T_k = \tfrac12 (3I - Z_k Y_k),\quad
              Y_{k+1} = Y_k T_k,\quad Z_{k+1} = T_k Z_k

    Returns ``(Y, Z)`` with :math:`Y \to A^{1/2}` and :math:`Z \to A^{-1/2}` on the range
    of ``A``. An eigenvalue :math:`\lambda` needs about :math:`\log(1/\lambda)/\log 2.25`
    steps before quadratic convergence sets in: ``iters`` fixes the smallest eigenvalue
    that is resolved (smaller ones come out as about :math:`2.25^k \lambda`, i.e. are
    under-penalised). Three matmuls per step.
    """
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    Y, Z = A, eye.expand_as(A)
    for _ in range(iters):
        T = 1.5 * eye - 0.5 * (Z @ Y)
        Y, Z = Y @ T, T @ Z
    return Y, Z


def iterative_pinv(A: Tensor, iters: int, top_eigenvalue: Tensor) -> Tensor:
    r"""Ben-Israel–Cohen iteration :math:`X_{i+1} = 2X_i - X_i A X_i`, :math:`X_0 = \alpha A^\top`,
    :math:`\alpha = 1/\lambda_{\max}^2`, for a symmetric ``A`` (the Gram matrix).

    Converges to :math:`A^+` when :math:`0 < \alpha < 2/\sigma_1(A)^2`; an eigenvalue
    :math:`\lambda` needs about :math:`\log_2(\lambda_{\max}^2/\lambda^2)` steps.
    Two matmuls per step.
    """
    alpha = 1 / top_eigenvalue.clamp_min(torch.finfo(A.dtype).tiny) ** 2
    X = alpha[..., None, None] * A.mT
    for _ in range(iters):
        X = 2 * X - X @ A @ X
    return X


def default_sqrt_iters(condition: float) -> int:
    """Newton–Schulz steps that resolve singular values down to ``sigma_1 / condition``."""
    smallest_eigenvalue = 1 / condition**2
    return math.ceil(math.log(1 / smallest_eigenvalue) / math.log(2.25)) + 6
