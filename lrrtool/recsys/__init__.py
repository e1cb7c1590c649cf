"""Rating-matrix completion (``lrrtool complete``): sparse observed entries of a large
matrix, fitted by low-rank models (:mod:`lrrtool.recsys.completion`), read from and
written to CSV (:mod:`lrrtool.recsys.tables`).

It is not image restoration; image inpainting's ``--method dlrl`` reaches it only
through :func:`complete_matrix`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lrrtool.recsys.completion import complete
from lrrtool.recsys.entries import Entries
from lrrtool.recsys.settings import CompletionSettings
from lrrtool.solvers import Callback, SolveResult


def complete_matrix(
    matrix: Tensor, observed: Tensor, settings: CompletionSettings, *, callback: Callback | None = None
) -> tuple[Tensor, SolveResult]:
    """Complete a dense ``(m, n)`` ``matrix`` from its entries where ``observed`` (bool
    ``(m, n)``) is True; returns the dense completion ``(m, n)`` and the solve result.
    Seeded by ``settings.seed``."""
    rows, cols = observed.nonzero(as_tuple=True)
    entries = Entries(rows, cols, matrix[rows, cols], tuple(matrix.shape))
    generator = torch.Generator().manual_seed(settings.seed)
    model, result = complete(entries, settings, generator=generator, callback=callback)
    return model.dense(), result
