r"""Matmul-only matrix functions: Gram matrix, a bound on :math:`\sigma_1`, the
Newton–Schulz square root and the Ben-Israel–Cohen pseudo-inverse.

Shapes: ``S`` is ``(..., m, n)``; Gram matrices are ``(..., k, k)`` with
``k = min(m, n)``. All functions are batched and device/dtype preserving.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.workers import run_all, workers


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


#: Below this many matrices a CPU batch is not worth splitting across threads.
PARALLEL_MIN_BATCH = 256


def batched_eigh(A: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` of a batch ``(..., k, k)``, the batch split across
    :func:`lrrtool.workers.workers` threads on the CPU.

    Torch's CPU ``eigh`` calls LAPACK for one matrix after the other on one core
    (measured: 16,384 36x36 matrices take 1.0 s with 1 or 2 intra-op threads, 0.55 s split
    over 2 workers). The results are bit-identical to one call. On other devices, or for
    small batches, one call."""
    count = workers()
    batch = A.shape[:-2].numel()
    if A.device.type != "cpu" or count < 2 or batch < PARALLEL_MIN_BATCH:
        return torch.linalg.eigh(A)
    flat = A.reshape(batch, *A.shape[-2:])
    parts = run_all(torch.linalg.eigh, flat.chunk(count), count=count)
    eigenvalues = torch.cat([values for values, _ in parts]).reshape(A.shape[:-1])
    # LAPACK's column-major layout, as one call returns it (later matmuls round by layout).
    vectors = torch.cat([vectors.mT for _, vectors in parts]).mT.reshape(A.shape)
    return eigenvalues, vectors


def gram_eigh(G: Tensor) -> tuple[Tensor, Tensor]:
    """Batched ``eigh`` of PSD Gram matrices, robust to what LAPACK trips on.

    Each matrix is divided by its trace first (LAPACK's own scaling overflows on
    denormal entries and returns NaN vectors); float32 batches that fail to converge
    (exactly repeated eigenvalues) are redone in float64; any matrix still not finite is
    treated as zero (eigenvalues 0, identity vectors), which gives it zero gradient.
    """
    trace = G.diagonal(dim1=-2, dim2=-1).sum(-1)
    unit = torch.where(trace > torch.finfo(G.dtype).tiny, trace, torch.ones_like(trace))
    normalised = G / unit[..., None, None]
    try:
        eigenvalues, V = batched_eigh(normalised)
    except torch.linalg.LinAlgError:
        if not bool(torch.isfinite(G).all()):
            raise LRRError(
                "the matrix holds NaN/Inf values (a diverged optimisation?); lower the learning rate or the weight"
            ) from None
        if G.dtype == torch.float64:
            raise
        eigenvalues, V = batched_eigh(normalised.double())
        eigenvalues, V = eigenvalues.to(G.dtype), V.to(G.dtype)
    # |V| <= 1 and the eigenvalues of a unit-trace matrix are <= 1: a sum is finite iff its terms are.
    finite = torch.isfinite(V.sum((-2, -1)) + eigenvalues.sum(-1))
    eigenvalues = eigenvalues * unit[..., None]
    if bool(finite.all()):  # the usual case: no batch-sized copy of V
        return eigenvalues, V
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    V = torch.where(finite[..., None, None], V, eye)
    eigenvalues = torch.where(finite[..., None], eigenvalues, 0)
    return eigenvalues, V


class _SymmetricPower(torch.autograd.Function):
    r""":math:`A^\alpha = V\,\mathrm{diag}(\lambda^\alpha)\,V^\top` for symmetric PSD ``A``,
    eigenvalues floored at ``floor`` times the largest.

    Backward by the Daleckii–Krein formula
    :math:`\bar A = V\,(D \circ V^\top \bar Y V)\,V^\top` with the divided differences
    :math:`D_{ij} = (\lambda_i^\alpha - \lambda_j^\alpha)/(\lambda_i - \lambda_j)`
    (:math:`\alpha\lambda_i^{\alpha-1}` where the eigenvalues coincide), so repeated
    eigenvalues, common in ReLU factors, give finite gradients.
    """

    @staticmethod
    def forward(ctx, A: Tensor, alpha: float, floor: float) -> Tensor:
        eigenvalues, V = gram_eigh(A)
        top = eigenvalues[..., -1:].clamp_min(torch.finfo(A.dtype).tiny)
        lam = torch.maximum(eigenvalues, floor * top)
        powered = lam**alpha
        ctx.save_for_backward(lam, powered, V)
        ctx.alpha = alpha
        return (V * powered[..., None, :]) @ V.mT

    @staticmethod
    def backward(ctx, grad: Tensor):
        lam, powered, V = ctx.saved_tensors
        gap = lam[..., :, None] - lam[..., None, :]
        slope = ctx.alpha * powered / lam
        close = gap.abs() <= 1e-6 * lam[..., -1:, None].abs()
        mean_slope = 0.5 * (slope[..., :, None] + slope[..., None, :])
        safe_gap = torch.where(close, torch.ones_like(gap), gap)
        divided = torch.where(close, mean_slope, (powered[..., :, None] - powered[..., None, :]) / safe_gap)
        inner = V.mT @ (0.5 * (grad + grad.mT)) @ V
        return V @ (divided * inner) @ V.mT, None, None


def symmetric_power(A: Tensor, alpha: float, *, floor: float = 1e-8) -> Tensor:
    r""":math:`A^\alpha` of a batch of symmetric PSD matrices ``(..., k, k)``, differentiable.

    Eigenvalues below ``floor * lambda_max`` are raised to it (negative powers stay finite).
    """
    return _SymmetricPower.apply(A, float(alpha), float(floor))


def right_gram_power(W: Tensor, Y: Tensor, alpha: float, *, floor: float = 1e-8) -> Tensor:
    r""":math:`W\,(Y^\top Y)^\alpha` for ``W`` ``(r, c)``, ``Y`` ``(q, c)``, ``alpha > 0``,
    through the smaller Gram matrix.

    With ``c <= q`` this is the ``c x c`` power directly. Otherwise
    :math:`(Y^\top Y)^\alpha = Y^\top (YY^\top)^{\alpha-1} Y` (equal on the range of
    :math:`Y^\top`, and both vanish on its complement since :math:`\alpha > 0`), so only a
    ``q x q`` matrix is decomposed: cost :math:`O((r + q)\,qc)` instead of :math:`O(c^3)`.
    """
    if alpha <= 0:
        raise ValueError("right_gram_power needs alpha > 0")
    if Y.shape[-1] <= Y.shape[-2]:
        return W @ symmetric_power(Y.mT @ Y, alpha, floor=floor)
    inner = symmetric_power(Y @ Y.mT, alpha - 1, floor=floor)
    return ((W @ Y.mT) @ inner) @ Y
