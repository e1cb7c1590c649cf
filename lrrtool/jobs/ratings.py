"""A rating matrix in, predictions out: the work of ``complete``."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lrrtool.jobs.images import solve_entry
from lrrtool.recsys import tables
from lrrtool.recsys.completion import complete
from lrrtool.recsys.entries import RatingMatrix, rating_errors
from lrrtool.recsys.settings import CompletionSettings
from lrrtool.solvers import Callback


def complete_csv(
    ratings: Path,
    settings: CompletionSettings,
    *,
    predict: Path | None = None,
    target: Path | None = None,
    test_fraction: float | None = None,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
) -> dict[str, object]:
    """Fit ``settings`` (:class:`lrrtool.recsys.completion.CompletionSettings`) to the
    ratings CSV; with ``test_fraction`` hold out a split seeded by ``settings.seed`` and report its RMSE/MAE;
    with ``predict`` write the predictions of its pairs to ``target``. Returns the entry."""
    columns = tables.read_ratings(ratings)
    pairs = tables.read_pairs(predict) if predict is not None else None
    data = RatingMatrix(columns.users, columns.items, columns.ratings, device=device)
    train, test = data.entries, None
    if test_fraction is not None:
        train, test = train.split(test_fraction, torch.Generator().manual_seed(settings.seed))
    low, high = float(train.values.min()), float(train.values.max())
    started = time.perf_counter()
    model, solve = complete(train, settings, callback=callback)
    entry: dict[str, object] = {
        "ratings": str(ratings),
        "users": train.shape[0],
        "items": train.shape[1],
        "observed": len(data.entries),
        "train": len(train),
        "rating_range": [low, high],
        **solve_entry(solve, time.perf_counter() - started),
    }
    if test is not None:
        predicted = model.predict(test.rows, test.cols).clamp(low, high)
        entry["test"] = {"count": len(test), **rating_errors(predicted, test.values)}
        entry["test"]["fallback"] = int((~model.seen(test.rows, test.cols)).sum())
    if pairs is not None:
        rows, cols = data.encode(pairs.users, pairs.items)
        values = model.predict(rows, cols).clamp(low, high).cpu().tolist()
        tables.write_predictions(target, pairs.users, pairs.items, values, protect=[ratings, predict])
        entry |= {"predict": str(predict), "output": str(target), "predicted": len(values)}
        entry["fallback"] = int((~model.seen(rows, cols)).sum())
    return entry
