"""Reading and writing rating tables (CSV): the only module that parses or writes CSV.

A ratings file has a header naming the columns ``user``, ``item`` and ``rating`` (any
order, any extra columns ignored, names case-insensitive); ids are any strings (kept
verbatim, surrounding spaces removed). A pairs file needs ``user`` and ``item`` only.
Every problem is an :class:`LRRError` that names the file and line. Writes are atomic.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lrrtool.errors import LRRError
from lrrtool.media import atomic_path, check_output, existing_file


@dataclass(frozen=True)
class RatingColumns:
    """The columns of a ratings or pairs file; ``ratings`` is None for a pairs file."""

    users: list[str]
    items: list[str]
    ratings: list[float] | None


def _rows(path: Path, needed: Sequence[str]) -> tuple[dict[str, int], Iterable[tuple[int, list[str]]]]:
    path = existing_file(path, "a CSV file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise LRRError(f"{path}: not a UTF-8 text file") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    while header is not None and not any(cell.strip() for cell in header):
        header = next(reader, None)
    if header is None:
        raise LRRError(f"{path}: empty file; expected a header line {','.join(needed)}")
    names = [cell.strip().lower() for cell in header]
    missing = [name for name in needed if name not in names]
    if missing:
        raise LRRError(
            f"{path}: line 1 must be a header naming the columns {','.join(needed)} "
            f"(missing {','.join(missing)}; got {','.join(header)!r})"
        )
    columns = {name: names.index(name) for name in needed}
    width = max(columns.values()) + 1

    def rows() -> Iterable[tuple[int, list[str]]]:
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < width:
                raise LRRError(f"{path}: line {number} has {len(row)} fields, expected at least {width}")
            yield number, row

    return columns, rows()


def read_ratings(path: str | Path) -> RatingColumns:
    """``user,item,rating`` rows; refuses non-numeric or non-finite ratings, empty ids,
    duplicate ``(user, item)`` pairs and files without a rating."""
    users, items, ratings = [], [], []
    columns, rows = _rows(Path(path), ("user", "item", "rating"))
    seen: dict[tuple[str, str], int] = {}
    u, i, r = columns["user"], columns["item"], columns["rating"]
    for number, row in rows:
        user, item, text = row[u].strip(), row[i].strip(), row[r].strip()
        if not user or not item:
            raise LRRError(f"{path}: line {number} has an empty user or item id")
        try:
            value = float(text)
        except ValueError:
            raise LRRError(f"{path}: line {number}: rating {text!r} is not a number") from None
        if not math.isfinite(value):
            raise LRRError(f"{path}: line {number}: rating {text!r} is not finite")
        first = seen.setdefault((user, item), number)
        if first != number:
            raise LRRError(
                f"{path}: line {number} repeats the pair user {user!r}, item {item!r} of line {first}; "
                "keep one rating per pair"
            )
        users.append(user)
        items.append(item)
        ratings.append(value)
    if not ratings:
        raise LRRError(f"{path}: no ratings after the header")
    return RatingColumns(users, items, ratings)


def read_pairs(path: str | Path) -> RatingColumns:
    """``user,item`` rows (other columns ignored) to predict."""
    users, items = [], []
    columns, rows = _rows(Path(path), ("user", "item"))
    for number, row in rows:
        user, item = row[columns["user"]].strip(), row[columns["item"]].strip()
        if not user or not item:
            raise LRRError(f"{path}: line {number} has an empty user or item id")
        users.append(user)
        items.append(item)
    if not users:
        raise LRRError(f"{path}: no user,item pairs after the header")
    return RatingColumns(users, items, None)


def check_predictions_path(path: str | Path, protect=()) -> Path:
    """Refuse, before any work, a predictions path that is not ``.csv`` or cannot be written."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise LRRError(f"{path}: predictions are written as CSV; give a .csv name, not {path.suffix or 'none'!r}")
    return check_output(path, protect)


def write_predictions(
    path: str | Path, users: Sequence[str], items: Sequence[str], ratings: Sequence[float], *, protect=()
) -> Path:
    """Write ``user,item,rating`` rows atomically (ratings with 4 decimals)."""
    with atomic_path(path, protect) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("user", "item", "rating"))
        writer.writerows((u, i, f"{r:.4f}") for u, i, r in zip(users, items, ratings, strict=True))
    return Path(path)
