"""Observed entries of a sparse matrix (COO), ratings keyed by ids, and rating errors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lrrtool.errors import LRRError


@dataclass(frozen=True)
class Entries:
    """Observed entries of an ``m x n`` matrix: ``rows``, ``cols`` long ``(N,)`` and
    ``values`` float ``(N,)`` on one device; ``shape = (m, n)``."""

    rows: Tensor
    cols: Tensor
    values: Tensor
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        n = self.values.shape[0]
        if self.rows.shape != (n,) or self.cols.shape != (n,) or self.values.ndim != 1:
            raise LRRError("rows, cols and values must be 1-D tensors of one length")
        if n == 0:
            raise LRRError("no observed entries to complete from")
        if not bool(torch.isfinite(self.values).all()):
            raise LRRError("the observed values hold NaN/Inf")

    def __len__(self) -> int:
        return self.values.shape[0]

    def counts(self) -> tuple[Tensor, Tensor]:
        """Observed entries per row ``(m,)`` and per column ``(n,)``, in the values' dtype."""
        ones = torch.ones_like(self.values)
        m, n = self.shape
        rows = torch.zeros(m, dtype=ones.dtype, device=ones.device).index_add_(0, self.rows, ones)
        return rows, torch.zeros(n, dtype=ones.dtype, device=ones.device).index_add_(0, self.cols, ones)

    def subset(self, index: Tensor) -> Entries:
        return Entries(self.rows[index], self.cols[index], self.values[index], self.shape)

    def split(self, test_fraction: float, generator: torch.Generator) -> tuple[Entries, Entries]:
        """A seeded random ``(train, test)`` split with ``round(test_fraction * N)`` test entries."""
        if not 0 < test_fraction < 1:
            raise LRRError(f"test_fraction must be in (0, 1), got {test_fraction}", parameter="test_fraction")
        order = torch.randperm(len(self), generator=generator).to(self.values.device)
        n_test = round(test_fraction * len(self))
        if n_test == 0 or n_test == len(self):
            raise LRRError(
                f"test_fraction {test_fraction} leaves an empty train or test set", parameter="test_fraction"
            )
        return self.subset(order[n_test:]), self.subset(order[:n_test])


class RatingMatrix:
    """Ratings keyed by arbitrary user and item ids, as :class:`Entries` on ``device``.

    Rows are users and columns items, numbered in order of first appearance.
    """

    def __init__(
        self,
        users: list[str],
        items: list[str],
        ratings: list[float],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.user_index: dict[str, int] = {}
        self.item_index: dict[str, int] = {}
        rows = [self.user_index.setdefault(u, len(self.user_index)) for u in users]
        cols = [self.item_index.setdefault(i, len(self.item_index)) for i in items]
        self.entries = Entries(
            torch.tensor(rows, dtype=torch.long, device=device),
            torch.tensor(cols, dtype=torch.long, device=device),
            torch.tensor(ratings, dtype=dtype, device=device),
            (len(self.user_index), len(self.item_index)),
        )

    def encode(self, users: list[str], items: list[str]) -> tuple[Tensor, Tensor]:
        """Row and column indices of ``(user, item)`` pairs; ``-1`` for an unseen id."""
        device = self.entries.rows.device
        rows = torch.tensor([self.user_index.get(u, -1) for u in users], dtype=torch.long, device=device)
        cols = torch.tensor([self.item_index.get(i, -1) for i in items], dtype=torch.long, device=device)
        return rows, cols


def rating_errors(predicted: Tensor, truth: Tensor) -> dict[str, float]:
    """``{"rmse", "mae"}`` of two ``(N,)`` tensors."""
    error = (predicted - truth).double()
    return {"rmse": float(error.square().mean().sqrt()), "mae": float(error.abs().mean())}
