"""Rating completion: RMSE, MAE and time of every ``lrrtool complete`` method, in one run.

Run: ``python bench/complete.py [--seeds 0,1,2] [--methods blend,lrr,...] [--scale] [--device cpu|cuda]``.

- MovieLens-100K from ``../shared/data/ml-100k/ratings.dat`` (read there, never copied:
  its licence forbids redistribution); a seeded random 80/20 split per seed, exactly the
  split ``lrrtool complete --test-fraction 0.2 --seed S`` makes. Every method at its
  default settings; the DLRL paper's figure is 0.8892. The table also gives the MSE,
  because the DLRL reference code prints the MSE under the name RMSE.
- ``--scale``: a synthetic MovieLens-1M-sized problem (6040 x 3706, 1,000,209 ratings
  1-5 from a planted rank-10 model with noise, MovieLens-like skewed popularity), fitted
  with the default method: seconds and peak resident memory. MovieLens-1M itself is not
  available offline.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from lrrtool.recsys.completion import complete
from lrrtool.recsys.entries import Entries, RatingMatrix, rating_errors
from lrrtool.recsys.settings import METHODS, CompletionSettings

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "ratings.dat"
PAPER = {"dlrl (paper, Table III)": 0.8892, "MSS (paper)": 0.9505, "IRNN (paper)": 0.9387, "sRGCNN (paper)": 0.9271}


def load_ml100k() -> Entries:
    users, items, ratings = [], [], []
    for line in ML100K.read_text().splitlines():
        user, item, rating, _ = line.split("::")
        users.append(user)
        items.append(item)
        ratings.append(float(rating))
    return RatingMatrix(users, items, ratings).entries


def on(entries: Entries, device: str) -> Entries:
    return Entries(entries.rows.to(device), entries.cols.to(device), entries.values.to(device), entries.shape)


def run(train: Entries, test: Entries, method: str, device: str = "cpu") -> tuple[float, float, float]:
    train, test = on(train, device), on(test, device)
    start = time.perf_counter()
    model, _ = complete(train, CompletionSettings(method=method))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    low, high = float(train.values.min()), float(train.values.max())
    errors = rating_errors(model.predict(test.rows, test.cols).clamp(low, high), test.values)
    return errors["rmse"], errors["mae"], seconds


def movielens(seeds: list[int], methods: list[str], device: str) -> None:
    entries = load_ml100k()
    print(f"MovieLens-100K: {entries.shape[0]} users x {entries.shape[1]} items, {len(entries)} ratings")
    results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
    for seed in seeds:
        train, test = entries.split(0.2, torch.Generator().manual_seed(seed))
        for method in methods:
            rmse, mae, seconds = run(train, test, method, device)
            results[method].append((rmse, mae, seconds))
            print(f"  seed {seed} {method:8s} RMSE {rmse:.4f}  MAE {mae:.4f}  {seconds:5.1f} s", flush=True)
    print(f"\n## MovieLens-100K, random 80/20, seeds {seeds} (mean; per-seed RMSE in brackets)\n")
    print("| method | test RMSE | per seed | test MAE | MSE | s / fit |")
    print("|---|---|---|---|---|---|")
    for method, rows in results.items():
        rmse = sum(r[0] for r in rows) / len(rows)
        per_seed = " ".join(f"{r[0]:.4f}" for r in rows)
        mae = sum(r[1] for r in rows) / len(rows)
        mse = sum(r[0] ** 2 for r in rows) / len(rows)
        seconds = sum(r[2] for r in rows) / len(rows)
        print(f"| {method} | {rmse:.4f} | {per_seed} | {mae:.4f} | {mse:.4f} | {seconds:.1f} |")
    for name, value in PAPER.items():
        print(f"| {name} | {value:.4f} | | | | |")


def synthetic_ml1m(seed: int = 0) -> Entries:
    """MovieLens-1M-sized planted problem: popularity-skewed pairs, rank-10 truth, noise."""
    g = torch.Generator().manual_seed(seed)
    m, n, count, rank = 6040, 3706, 1_000_209, 10
    user_weight = torch.rand(m, generator=g) ** 3 + 0.02
    item_weight = torch.rand(n, generator=g) ** 4 + 0.005
    pairs = set()
    rows, cols = [], []
    while len(rows) < count:
        u = torch.multinomial(user_weight, count, replacement=True, generator=g)
        i = torch.multinomial(item_weight, count, replacement=True, generator=g)
        key = (u * n + i).unique()
        fresh = [k for k in key.tolist() if k not in pairs][: count - len(rows)]
        pairs.update(fresh)
        fresh_t = torch.tensor(fresh)
        rows += (fresh_t // n).tolist()
        cols += (fresh_t % n).tolist()
    rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
    U = torch.randn(m, rank, generator=g) / rank**0.5
    V = torch.randn(n, rank, generator=g) / rank**0.5
    values = 3.6 + 0.6 * (U[rows_t] * V[cols_t]).sum(-1) + 0.8 * torch.randn(len(rows), generator=g)
    return Entries(rows_t, cols_t, values.round().clamp(1, 5), (m, n))


def scale() -> None:
    entries = synthetic_ml1m()
    train, test = entries.split(0.2, torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rmse, _, seconds = run(train, test, CompletionSettings.method)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\n## Synthetic MovieLens-1M size ({entries.shape[0]} x {entries.shape[1]}, {len(entries)} ratings)\n")
    print(
        f"default method {CompletionSettings.method}: fit {seconds:.1f} s, test RMSE {rmse:.4f} (noise floor ~0.8), "
        f"peak RSS {peak:.2f} GiB (before the fit {before:.2f} GiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"# bench/complete.py, device {args.device}, torch threads {torch.get_num_threads()}")
    if ML100K.exists():
        movielens([int(s) for s in args.seeds.split(",")], args.methods.split(","), args.device)
    else:
        print(f"({ML100K} not found: MovieLens table skipped)")
    if args.scale:
        scale()


if __name__ == "__main__":
    main()
