"""The fitted completion models: biases, the factored low-rank model, the DLRL paper's
network, I-AutoRec, and their blend (:func:`lrrtool.recsys.completion.complete` fits them)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.core.matfun import right_gram_power, symmetric_power
from lrrtool.recsys.entries import Entries
from lrrtool.solvers import Callback, Progress, SolveResult, minimize

if TYPE_CHECKING:
    from lrrtool.recsys.settings import CompletionSettings


class Biases:
    r"""The bias model :math:`\mu + b_u + c_i`, fitted by a few alternating ridge steps
    :math:`c_i = \sum_u (x_{ui} - \mu - b_u)/(\lambda + n_i)`, then :math:`b_u` likewise.
    Index ``-1`` (unseen) contributes a zero bias."""

    def __init__(self, entries: Entries, reg: float, sweeps: int = 4) -> None:
        m, n = entries.shape
        values = entries.values
        self.mean = values.mean()
        self.row = torch.zeros(m, dtype=values.dtype, device=values.device)
        self.col = torch.zeros(n, dtype=values.dtype, device=values.device)
        row_count, col_count = entries.counts()
        for _ in range(sweeps):
            rest = values - self.mean - self.row[entries.rows]
            self.col = torch.zeros_like(self.col).index_add_(0, entries.cols, rest) / (reg + col_count)
            rest = values - self.mean - self.col[entries.cols]
            self.row = torch.zeros_like(self.row).index_add_(0, entries.rows, rest) / (reg + row_count)

    def predict(self, rows: Tensor, cols: Tensor) -> Tensor:
        zero = torch.zeros((), dtype=self.row.dtype, device=self.row.device)
        row = torch.where(rows >= 0, self.row[rows.clamp_min(0)], zero)
        col = torch.where(cols >= 0, self.col[cols.clamp_min(0)], zero)
        return self.mean + row + col


class _SeenLines:
    """Which rows and columns a model was fitted on: pairs outside them get the biases."""

    def remember_seen(self, entries: Entries) -> None:
        row_count, col_count = entries.counts()
        self.row_seen, self.col_seen = row_count > 0, col_count > 0

    def seen(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Bool ``(N,)``: both the row and the column have observed entries."""
        r, c = rows.clamp_min(0), cols.clamp_min(0)
        return (rows >= 0) & (cols >= 0) & self.row_seen[r] & self.col_seen[c]


class Completion(_SeenLines):
    """A fitted model: ``predict(rows, cols)`` for any pairs (``-1`` = unseen), ``dense()``."""

    def __init__(self, entries: Entries, biases: Biases, left: Tensor, right: Tensor, *, offset: bool) -> None:
        self.shape = entries.shape
        self.biases, self.offset = biases, offset
        self.left, self.right = left.detach(), right.detach()
        self.remember_seen(entries)

    def predict(self, rows: Tensor, cols: Tensor) -> Tensor:
        """``(N,)`` predictions; pairs with an unseen row or column get the bias model."""
        seen = self.seen(rows, cols)
        r, c = rows.clamp_min(0), cols.clamp_min(0)
        low_rank = (self.left[r] * self.right[:, c].mT).sum(-1)
        base = self.biases.predict(rows, cols)
        full = base + low_rank if self.offset else low_rank
        return torch.where(seen, full, base)

    def dense(self) -> Tensor:
        """The ``m x n`` completed matrix (allocates it)."""
        low_rank = self.left @ self.right
        if not self.offset:
            return low_rank
        return self.biases.mean + self.biases.row[:, None] + self.biases.col[None, :] + low_rank


def factored_core(U: Tensor, V: Tensor) -> Tensor:
    r"""The ``d x d`` matrix :math:`R_UR_V^\top` whose singular values are those of
    :math:`UV^\top` (``U`` ``(m, d)``, ``V`` ``(n, d)``, ``d <= m, n``), differentiable."""
    return torch.linalg.qr(U)[1] @ torch.linalg.qr(V)[1].mT


def frequency_weights(counts: Tensor, power: float) -> Tensor:
    """Weights proportional to ``counts**power`` (counts floored at 1), mean 1."""
    weights = counts.clamp_min(1) ** power
    return weights / weights.mean()


def seeded_randn(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


class DLRL:
    r"""Differentiable low-rank learning (DLRL paper, Algorithm 1), as the paper states it.

    :math:`\hat X = \hat X_1\cdots\hat X_I` with ``X_1`` ``(m, d)``, ``X_2..X_{I-1}``
    ``(d, d)``, ``X_I`` ``(d, n)``. One epoch visits the blocks in order (block
    coordinate descent: block ``i`` sees the blocks before it already updated):

    .. math::
        L_i = \max(\|\hat X_{<i}\|_2^2\,\|X_{>i}\|_2^2, \epsilon),\quad
        Y_i = X_i - \frac{1}{\eta L_i}\nabla_{X_i} f,\quad
        \hat X_i = \mathrm{ReLU}\big(\tfrac12 W_i G_i^{-1}\big),\
        G_i = \tfrac12 (Y_i^\top Y_i)^{(p_i - 2)/2}

    with :math:`f = \tfrac12\|P_\Omega(X_1\cdots X_I - M)\|_F^2` and its true gradient
    :math:`\nabla_{X_i} f = X_{<i}^\top P_\Omega(X_1\cdots X_I - M)\,X_{>i}^\top`.
    :math:`G_i^{-1} = 2(Y_i^\top Y_i)^{(2-p_i)/2}` is a matrix function, evaluated through
    the smaller Gram matrix (:func:`lrrtool.core.matfun.right_gram_power`). The loss
    :math:`\tfrac12\|P_\Omega(\hat X - M)\|^2` is back-propagated to
    :math:`\Theta = \{W_i, \eta\}` (:math:`\eta = \mathrm{sigmoid}(\theta) \in (0, 1)`),
    and the factors are then replaced by the :math:`\hat X_i` (they are updated, unlike
    the paper's code). The model predicts :math:`\hat X_{ui}` (ratings are non-negative).

    Two changes make the iteration stable; as written in the paper it diverges within ten
    epochs (measured; see docs/completion.md). First, :math:`W_i` enters through its polar factor
    :math:`W_i(W_i^\top W_i)^{-1/2}`, so a learned :math:`\|W_i\|_2 > 1` cannot make the
    block map expansive. Second, after every epoch the factors are rescaled to equal norms
    (the product is unchanged), which stops the scale drift between blocks. :math:`\eta`
    starts at sigmoid(3) ≈ 0.95.
    """

    def __init__(self, entries: Entries, settings: CompletionSettings, generator: torch.Generator) -> None:
        self.entries, self.s = entries, settings
        self.observed = _Observed(entries)
        m, n = entries.shape
        d, like = settings.width, entries.values
        shapes = [(m, d)] + [(d, d)] * (settings.factors - 2) + [(d, n)]
        factors = [torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device) for shape in shapes]
        # Scale so that the product's mean matches the mean observed value.
        target = float(entries.values.abs().mean())
        product_mean = float(_chain(factors).mean())
        ratio = (target / product_mean) ** (1 / len(factors)) if product_mean > 0 else 1.0
        self.factors = [f * ratio for f in factors]
        alpha = (2 - settings.p_block) / 2
        # W_i starts where the block maps X_i to itself: X_i (X_i^T X_i)^{-alpha}.
        self.weights = [_undo_gram_power(f, alpha) for f in self.factors]
        self.eta_logit = torch.full((), 3.0, dtype=like.dtype, device=like.device)

    def blocks(self) -> list[Tensor]:
        """One epoch of the network; returns the :math:`\\hat X_i` (differentiable in Θ)."""
        s = self.s
        eta = torch.sigmoid(self.eta_logit)
        alpha = (2 - s.p_block) / 2
        current = list(self.factors)
        for i in range(len(current)):
            left = _chain(current[:i]) if i > 0 else None
            right = _chain(current[i + 1 :]) if i + 1 < len(current) else None
            grad = self.observed.gradient(left, right, self.observed.residual(current))
            lipschitz = _spectral_sq(left) * _spectral_sq(right)
            step = current[i] - grad / (eta * lipschitz.clamp_min(1e-8))
            current[i] = torch.relu(right_gram_power(_undo_gram_power(self.weights[i], 0.5), step, alpha))
        return current

    def fit(self, biases: Biases, callback: Callback | None) -> tuple[Completion, SolveResult]:
        e = self.entries
        params = [*self.weights, self.eta_logit]
        for p in params:
            p.requires_grad_(True)

        def objective() -> Tensor:
            updated = self.blocks()
            loss = 0.5 * self.observed.residual(updated).square().sum()
            self.factors = _balanced([f.detach() for f in updated])
            return loss

        result = minimize(objective, params, iters=self.s.iters, lr=self.s.lr, tol=0, callback=callback)
        left = _chain(self.factors[:-1])
        return Completion(e, biases, left, self.factors[-1], offset=False), result


def _balanced(factors: list[Tensor]) -> list[Tensor]:
    """The factors rescaled to equal Frobenius norms, their product unchanged (this
    removes the scale gauge along which block updates otherwise drift apart)."""
    norms = torch.stack([f.norm() for f in factors]).clamp_min(1e-30)
    target = norms.log().mean().exp()
    return [f * (target / n) for f, n in zip(factors, norms, strict=True)]


def _chain(factors: list[Tensor]) -> Tensor:
    out = factors[0]
    for f in factors[1:]:
        out = out @ f
    return out


def _observed_product(factors: list[Tensor], rows: Tensor, cols: Tensor) -> Tensor:
    left = _chain(factors[:-1])
    return (left[rows] * factors[-1][:, cols].mT).sum(-1)


class _Observed:
    """:math:`P_\\Omega` for DLRL: index lists, or a dense mask when at least a tenth of
    the entries are observed (images), where dense matmuls are much faster."""

    def __init__(self, e: Entries) -> None:
        m, n = e.shape
        self.e = e
        self.dense = len(e) >= 0.1 * m * n and m * n <= 50_000_000
        if self.dense:
            self.mask = torch.zeros(m, n, dtype=e.values.dtype, device=e.values.device)
            self.mask[e.rows, e.cols] = 1
            self.target = torch.zeros_like(self.mask)
            self.target[e.rows, e.cols] = e.values

    def residual(self, factors: list[Tensor]) -> Tensor:
        """:math:`P_\\Omega(X_1\\cdots X_I - M)`: ``(m, n)`` if dense, else ``(N,)``."""
        if self.dense:
            return self.mask * (_chain(factors) - self.target)
        return _observed_product(factors, self.e.rows, self.e.cols) - self.e.values

    def gradient(self, left: Tensor | None, right: Tensor | None, residual: Tensor) -> Tensor:
        r""":math:`L^\top R\,B^\top` for the residual ``R``; ``L``/``B`` None = identity."""
        if self.dense:
            out = residual if right is None else residual @ right.mT
            return out if left is None else left.mT @ out
        e = self.e
        m, n = e.shape
        if right is None:  # (L^T R) as a (d, n) matrix: accumulate per column
            per_col = torch.zeros(n, left.shape[1], dtype=residual.dtype, device=residual.device)
            return per_col.index_add_(0, e.cols, left[e.rows] * residual[:, None]).mT
        rb = torch.zeros(m, right.shape[0], dtype=residual.dtype, device=residual.device)
        rb = rb.index_add_(0, e.rows, right[:, e.cols].mT * residual[:, None])
        return rb if left is None else left.mT @ rb


def _undo_gram_power(x: Tensor, alpha: float) -> Tensor:
    r""":math:`x\,(x^\top x)^{-\alpha}`, so that ``right_gram_power(result, x, alpha) == x``."""
    if x.shape[1] <= x.shape[0]:
        return x @ symmetric_power(x.mT @ x, -alpha, floor=1e-6)
    return symmetric_power(x @ x.mT, -alpha, floor=1e-6) @ x


def _spectral_sq(x: Tensor | None) -> Tensor:
    """:math:`\\|x\\|_2^2` (detached), 1 for None."""
    if x is None:
        return torch.tensor(1.0)
    with torch.no_grad():
        small = x.mT @ x if x.shape[0] >= x.shape[1] else x @ x.mT
        return torch.linalg.eigvalsh(small)[-1]


class Blend:
    """The mean of several fitted models' predictions (an equal-weight ensemble)."""

    def __init__(self, models: list) -> None:
        self.models = models

    def seen(self, rows: Tensor, cols: Tensor) -> Tensor:
        return self.models[0].seen(rows, cols)

    def predict(self, rows: Tensor, cols: Tensor) -> Tensor:
        return torch.stack([m.predict(rows, cols) for m in self.models]).mean(0)


class _ItemColumns:
    """Observed entries grouped by column (CSR over items): for item ``i``, ``users`` and
    ``values`` ``[starts[i] : starts[i] + counts[i]]`` are its observed rows and ratings,
    so a column's sparse vector :math:`r_i` never becomes dense."""

    def __init__(self, e: Entries) -> None:
        order = torch.argsort(e.cols, stable=True)
        self.users, self.values = e.rows[order], e.values[order]
        self.counts = torch.bincount(e.cols, minlength=e.shape[1])
        self.starts = self.counts.cumsum(0) - self.counts

    def epoch(self, items: Tensor, batch: int) -> tuple[Tensor, Tensor, Tensor, Tensor, list[int]]:
        """The entries of ``items`` (a permutation), in that order: ``users``, ``values``,
        ``local`` (each entry's position in ``items``) and ``offsets`` (where each item's
        entries begin), and the entry index where every ``batch`` of items ends (one host
        sync per epoch, none per batch)."""
        lengths = self.counts[items]
        ends = lengths.cumsum(0)
        offsets = ends - lengths
        total, device = len(self.users), items.device
        local = torch.repeat_interleave(torch.arange(len(items), device=device), lengths, output_size=total)
        position = self.starts[items][local] + torch.arange(total, device=device) - offsets[local]
        bounds = ends[batch - 1 :: batch].tolist()
        if len(bounds) * batch < len(items):
            bounds.append(len(self.users))
        return self.users[position], self.values[position], local, offsets, bounds

    def hidden(self, w1: Tensor, b1: Tensor) -> Tensor:
        r""":math:`\mathrm{sigmoid}(W_1 r_i + b_1)` for every item ``(n, d)`` (``w1`` is
        :math:`W_1^\top`, ``(m, d)``), by one sparse sum of rows of ``w1``."""
        pre = F.embedding_bag(self.users, w1, self.starts, mode="sum", per_sample_weights=self.values)
        return torch.sigmoid(pre + b1)


class ItemAutoencoder(_SeenLines):
    r"""I-AutoRec (Sedhain et al., 2015): every column (item) :math:`r_i \in \mathbb{R}^m`
    of observed ratings is reconstructed as :math:`f(r_i) = W_2\,\mathrm{sigmoid}(W_1 r_i + b_1) + b_2`
    with ``width`` hidden units, minimising the squared error on observed entries plus
    :math:`\tfrac{\lambda}2(\|W_1\|^2 + \|W_2\|^2)` (``lam``), by mini-batch Adam
    (step ``lr``). A seeded ``holdout`` fraction of the entries picks the epoch (early
    stopping after ``patience`` epochs without gain; at most ``iters`` epochs).

    The input layer is a sparse sum (``embedding_bag`` over each item's observed ratings,
    6 % of the column on MovieLens-100K), the loss is read at the observed entries only,
    and the ridge is Adam's ``weight_decay`` (the same gradient,
    :math:`\lambda\,(b/n)\,W` for a batch of ``b`` of ``n`` items): of the five dense
    ``batch x m x d`` products of a step, three remain. Nothing ``n x m`` is held.
    """

    batch: ClassVar[int] = 128
    holdout: ClassVar[float] = 0.05
    patience: ClassVar[int] = 10

    def __init__(self, entries: Entries, settings: CompletionSettings, generator: torch.Generator) -> None:
        self.entries, self.s, self.generator = entries, settings, generator

    def fit(self, biases: Biases, callback: Callback | None) -> tuple[ItemAutoencoder, SolveResult]:
        began = time.perf_counter()
        e = self.entries
        m, n = e.shape
        like = e.values
        fit_part, check_part = e.split(self.holdout, self.generator) if len(e) >= 40 else (e, None)
        columns = _ItemColumns(fit_part)
        hidden = self.s.width
        bound1, bound2 = 1 / math.sqrt(m), 1 / math.sqrt(hidden)
        w1 = ((torch.rand(hidden, m, generator=self.generator, dtype=like.dtype) * 2 - 1) * bound1).to(like.device)
        w2 = ((torch.rand(m, hidden, generator=self.generator, dtype=like.dtype) * 2 - 1) * bound2).to(like.device)
        w1 = w1.mT.contiguous()  # W_1^T (m, d): the rows embedding_bag sums
        b1 = torch.zeros(hidden, dtype=like.dtype, device=like.device)
        b2 = torch.zeros(m, dtype=like.dtype, device=like.device)
        params = [w1, b1, w2, b2]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(
            [{"params": [w1, w2]}, {"params": [b1, b2], "weight_decay": 0.0}], lr=self.s.lr, fused=True
        )
        best, best_epoch, best_state, history = math.inf, 0, [p.detach().clone() for p in params], []
        stopped = False
        epoch = 0
        for epoch in range(1, self.s.iters + 1):
            order = torch.randperm(n, generator=self.generator).to(like.device)
            users, values, local, offsets, bounds = columns.epoch(order, self.batch)
            low = 0
            for k, high in enumerate(bounds):
                first = k * self.batch
                items = slice(first, min(first + self.batch, n))
                rows, ratings = users[low:high], values[low:high]
                pre = F.embedding_bag(rows, w1, offsets[items] - low, mode="sum", per_sample_weights=ratings)
                out = torch.sigmoid(pre + b1) @ w2.mT + b2
                loss = (out[local[low:high] - first, rows] - ratings).square().sum()
                optimizer.param_groups[0]["weight_decay"] = self.s.lam * (items.stop - first) / n
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                low = high
            self.weights = [p.detach() for p in params]
            if check_part is None:
                continue
            predicted = self._raw(check_part.rows, check_part.cols, columns)
            error = float((predicted - check_part.values).square().mean())
            history.append((epoch, error))
            if callback is not None:
                callback(Progress(epoch, self.s.iters, "holdout_mse", error))
            if error < best:
                best, best_epoch, best_state = error, epoch, [p.detach().clone() for p in params]
            elif epoch - best_epoch >= self.patience:
                stopped = True
                break
        if check_part is not None:
            self.weights = best_state
        # The held-out entries are known at prediction time.
        self.columns, self.biases = _ItemColumns(e), biases
        self.remember_seen(e)
        seconds = time.perf_counter() - began
        value = math.sqrt(best) if history else math.nan
        return self, SolveResult(epoch, "holdout_rmse", value, stopped, seconds, history)

    def _raw(self, rows: Tensor, cols: Tensor, columns: _ItemColumns) -> Tensor:
        """:math:`f(r_i)_u` at pairs ``(rows, cols)`` ``(N,)``: ``(N,)``."""
        w1, b1, w2, b2 = self.weights
        with torch.no_grad():
            h = columns.hidden(w1, b1)
            return torch.einsum("nd,nd->n", h[cols], w2[rows]) + b2[rows]

    def predict(self, rows: Tensor, cols: Tensor) -> Tensor:
        seen = self.seen(rows, cols)
        raw = self._raw(rows.clamp_min(0), cols.clamp_min(0), self.columns)
        return torch.where(seen, raw, self.biases.predict(rows, cols))
