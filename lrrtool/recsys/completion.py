r"""Matrix completion from a sparse set of observed entries: the shared numerics of
``lrrtool complete`` (rating matrices) and ``lrrtool inpaint --method dlrl``.

The observed entries of an ``m x n`` matrix are :class:`Entries` (COO: row and column
indices and values, ``N`` of them); nothing of size ``m x n`` is ever allocated unless a
dense result is asked for, so MovieLens-1M (6k x 4k, 1M ratings) fits easily. Methods
(``METHODS``); the first three minimise
:math:`\tfrac12\sum_{(u,i)\in\Omega}(\hat x_{ui} - x_{ui})^2` plus a penalty by full-batch
Adam (:func:`lrrtool.solvers.minimize`):

- ``mf``: the plain baseline, :math:`\hat x = \mu + b_u + c_i + U_u^\top V_i` with
  :math:`\tfrac{\lambda}2(\|U\|_F^2 + \|V\|_F^2)` (biases: ``bias_reg``). Since
  :math:`\min_{UV^\top = X}\tfrac12(\|U\|^2 + \|V\|^2) = \|X\|_*`, this is nuclear-norm
  completion in factored form.
- ``lrr``: the same model with any ``--reg`` penalty on the row/column-weighted
  low-rank part, :math:`\lambda\sum_j h(\sigma_j(D_r^{1/2} UV^\top D_c^{1/2}))`, with
  :math:`D` the diagonal of weights :math:`w \propto n^\beta` (observed entries per row or
  column, ``weight_power`` :math:`\beta`). With ``nuclear`` this is the weighted trace
  norm (Salakhutdinov & Srebro, 2010), which is what beats ``mf`` on ratings. It is
  evaluated exactly without an ``m x n`` SVD: with :math:`D_r^{1/2}U = Q_UR_U`,
  :math:`D_c^{1/2}V = Q_VR_V`, the singular values are those of the ``d x d`` matrix
  :math:`R_UR_V^\top` (:func:`factored_core`).
- ``dlrl``: the DLRL paper's network (:class:`DLRL`), :math:`\hat X = \hat X_1\cdots\hat X_I`.
- ``autorec``: I-AutoRec (:class:`ItemAutoencoder`), a non-linear model with ``width``
  hidden units.
- ``blend`` (default): the equal-weight mean of one ``lrr`` model and
  ``BLEND_AUTOENCODERS`` seeded ``autorec`` models. Measured on MovieLens-100K
  (``bench/complete.py``) it is the only setting under the DLRL paper's 0.8892 test RMSE;
  ``lrr`` alone is about 0.905, ``autorec`` 0.895, and the paper's ``dlrl`` about 0.94.

Users or items without an observed entry get the bias model's prediction
(:class:`Biases`; the global mean when both are unseen).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.recsys.entries import Entries
from lrrtool.recsys.models import (
    DLRL,
    Biases,
    Blend,
    Completion,
    ItemAutoencoder,
    factored_core,
    frequency_weights,
    seeded_randn,
)
from lrrtool.settings import TaskSettings
from lrrtool.solvers import Callback, SolveResult, minimize

METHODS = ("blend", "lrr", "autorec", "dlrl", "mf")
#: Seeded I-AutoRec members of ``blend`` (next to one ``lrr`` model).
BLEND_AUTOENCODERS = 2


_LRR_DEFAULTS: dict[str, object] = {
    "reg": "nuclear",
    "estimator": "auto",
    "lam": 10.0,
    "iters": 250,  # 400 steps at lr 0.02 gave the same blend RMSE (bench/complete.py) in 1.6x the time
    "lr": 0.03,
    "width": 20,
}


@dataclass(frozen=True)
class CompletionSettings(TaskSettings):
    r"""Settings of :func:`complete`; defaults measured on MovieLens-100K (``bench/complete.py``).

    ``width`` is the factor width ``d`` (``autorec``: the hidden units); ``factors``
    (``I``) and ``p_block`` (:math:`p_i`, the Schatten exponent of every factor, so
    :math:`1/p = I/p_i`) are DLRL's. ``lam`` weighs the penalty of ``mf``/``lrr`` and the
    weight decay of ``autorec``; ``iters`` is Adam steps (``autorec``: the most epochs,
    early stopping on a 5 % hold-out); ``weight_power`` :math:`\beta` sets the row and
    column weights :math:`w \propto n^\beta` (``n`` = observed entries of that row or
    column) of ``lrr``'s penalty; ``bias_reg`` regularises the bias model. Settings left
    as None take the method's defaults; ``blend``'s settings are those of its ``lrr``
    member (its autoencoders keep ``autorec``'s defaults). A setting that a method does
    not use is refused (``applies_to``).
    """

    method: str = "blend"
    width: int | None = None
    factors: int | None = None
    p_block: float | None = None
    weight_power: float | None = None
    bias_reg: float = 5.0

    default_gamma: ClassVar[float | None] = 1.0
    choice_field: ClassVar[str] = "method"
    defaults: ClassVar[dict[str, dict[str, object]]] = {
        "blend": {**_LRR_DEFAULTS, "weight_power": 0.5},
        "lrr": {**_LRR_DEFAULTS, "weight_power": 0.5},
        "autorec": {"lam": 100.0, "iters": 60, "lr": 0.001, "width": 500},
        "dlrl": {"iters": 300, "lr": 0.001, "width": 20, "factors": 4, "p_block": 1.0},
        "mf": {"lam": 20.0, "iters": 400, "lr": 0.02, "width": 20},
    }
    applies_to: ClassVar[dict[str, tuple[str, ...]]] = {
        **dict.fromkeys(("reg", "gamma", "p", "degree", "estimator", "weight_power"), ("blend", "lrr")),
        "lam": ("blend", "lrr", "autorec", "mf"),
        **dict.fromkeys(("factors", "p_block"), ("dlrl",)),
    }
    counts: ClassVar[tuple[str, ...]] = ("width", "factors", "iters")
    nonnegative: ClassVar[tuple[str, ...]] = ("lam", "bias_reg", "weight_power")

    def check(self, s: dict[str, object]) -> None:
        super().check(s)
        if s["method"] == "dlrl" and s["factors"] < 2:
            raise LRRError(f"factors must be >= 2 for DLRL, got {s['factors']}", parameter="factors")
        if s["p_block"] is not None and not 0 < s["p_block"] < 2:
            raise LRRError(f"p_block must be in (0, 2), got {s['p_block']}", parameter="p_block")


def complete(
    entries: Entries,
    settings: CompletionSettings = CompletionSettings(),
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Completion, SolveResult]:
    """Fit ``settings.method`` to the observed ``entries``; see the module docstring."""
    settings = settings.resolved()
    if generator is None:
        generator = torch.Generator().manual_seed(settings.seed)
    biases = Biases(entries, settings.bias_reg)
    if settings.method == "dlrl":
        return DLRL(entries, settings, generator).fit(biases, callback)
    if settings.method == "autorec":
        return ItemAutoencoder(entries, settings, generator).fit(biases, callback)
    if settings.method == "blend":
        low_rank, result = _factored(entries, replace(settings, method="lrr"), biases, generator, callback)
        members = [low_rank]
        autorec = CompletionSettings(method="autorec", seed=settings.seed, bias_reg=settings.bias_reg).resolved()
        for _ in range(BLEND_AUTOENCODERS):
            member, extra = ItemAutoencoder(entries, autorec, generator).fit(biases, callback)
            members.append(member)
            result.iterations += extra.iterations
            result.seconds += extra.seconds
        return Blend(members), result
    return _factored(entries, settings, biases, generator, callback)


def _factored(
    entries: Entries,
    s: CompletionSettings,
    biases: Biases,
    generator: torch.Generator,
    callback: Callback | None,
) -> tuple[Completion, SolveResult]:
    m, n = entries.shape
    like = entries.values
    scale = 0.1 / math.sqrt(s.width)
    U = seeded_randn((m, s.width), generator, like) * scale
    V = seeded_randn((n, s.width), generator, like) * scale
    row_bias, col_bias = biases.row.clone(), biases.col.clone()
    params = [U, V, row_bias, col_bias]
    for p in params:
        p.requires_grad_(True)
    reg = s.regularizer() if s.method == "lrr" else None
    if reg is not None:
        row_count, col_count = entries.counts()
        row_scale = frequency_weights(row_count, s.weight_power).sqrt()[:, None]
        col_scale = frequency_weights(col_count, s.weight_power).sqrt()[:, None]
    rows, cols, values = entries.rows, entries.cols, entries.values

    def objective() -> Tensor:
        # index_select: its backward is one index_add (measured 2x faster than indexing's).
        pick_u, pick_v = U.index_select(0, rows), V.index_select(0, cols)
        predicted = biases.mean + row_bias.index_select(0, rows) + col_bias.index_select(0, cols)
        predicted = predicted + (pick_u * pick_v).sum(-1)
        data = 0.5 * (predicted - values).square().sum()
        bias_term = 0.5 * s.bias_reg * (row_bias.square().sum() + col_bias.square().sum())
        if reg is None:
            return data + bias_term + 0.5 * s.lam * (U.square().sum() + V.square().sum())
        # The gauge U -> cU, V -> V/c leaves R unchanged: a tiny ridge pins it.
        gauge = 1e-4 * (U.square().sum() + V.square().sum())
        return data + bias_term + s.lam * reg(factored_core(row_scale * U, col_scale * V)) + gauge

    result = minimize(objective, params, iters=s.iters, lr=s.lr, tol=0, callback=callback)
    fitted = copy.copy(biases)  # the fitted biases, the mean kept
    fitted.row, fitted.col = row_bias.detach(), col_bias.detach()
    return Completion(entries, fitted, U, V.mT, offset=True), result
