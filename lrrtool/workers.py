"""Plain worker threads that share CPU work: slices of a batch of small LAPACK calls,
tiles of an image.

Each worker runs its share with one torch intra-op thread. Unlike OpenMP's threads,
which spin-wait for each other and collapse beside another busy process
(``bench/threads.py``), a worker blocks while idle, so a run keeps its speed when the
cores are shared. Work submitted from inside a worker runs in that worker (no nesting).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

import torch

from lrrtool.errors import LRRError

T = TypeVar("T")
R = TypeVar("R")

_count: int | None = None
_pools: dict[int, ThreadPoolExecutor] = {}
_inside = threading.local()


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_workers(count: int | None) -> None:
    """Worker threads for :func:`run_all`; None (the default) follows ``torch.get_num_threads()``."""
    global _count
    if count is not None and count < 1:
        raise LRRError(f"workers must be >= 1, got {count}", parameter="workers")
    _count = count


def workers() -> int:
    """How many workers :func:`run_all` uses from here: 1 inside a worker."""
    if getattr(_inside, "worker", False):
        return 1
    return _count or torch.get_num_threads()


def _start_worker() -> None:
    _inside.worker = True
    torch.set_num_threads(1)


def run_all(
    work: Callable[[T], R],
    items: Iterable[T],
    *,
    count: int | None = None,
    done: Callable[[int, int], None] | None = None,
) -> list[R]:
    """``[work(item) for item in items]``, shared over ``count`` workers (default
    :func:`workers`); in this thread when that is 1. ``done(finished, total)`` is called
    in this thread as items finish. The first error is raised (the rest are cancelled)."""
    items = list(items)
    count = min(count or workers(), len(items))
    if count < 2:
        results = []
        for item in items:
            results.append(work(item))
            if done is not None:
                done(len(results), len(items))
        return results
    if count not in _pools:
        _pools[count] = ThreadPoolExecutor(count, thread_name_prefix="lrrtool-worker", initializer=_start_worker)
    grad = torch.is_grad_enabled()

    def call(item: T) -> R:
        with torch.set_grad_enabled(grad):
            return work(item)

    futures = [_pools[count].submit(call, item) for item in items]
    try:
        for finished, future in enumerate(as_completed(futures), 1):
            future.result()
            if done is not None:
                done(finished, len(items))
    finally:
        for future in futures:
            future.cancel()
    return [future.result() for future in futures]
