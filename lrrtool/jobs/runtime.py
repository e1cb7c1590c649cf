"""Where and how a command runs: the device and precision, CPU threads, and the process's
memory (one heap, freed memory handed back, its peak)."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

from lrrtool import workers
from lrrtool.errors import LRRError
from lrrtool.solvers import Callback, Progress

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cuda`` refused where there is none."""
    if name not in DEVICES:
        raise LRRError(f"device must be one of {', '.join(DEVICES)}, got {name!r}", parameter="device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LRRError(
            "device cuda: no CUDA device is available (this torch build or machine has none)", parameter="device"
        )
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise LRRError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}", parameter="dtype")
    return DTYPES[name]


def set_threads(threads: int, *, shared: bool = False) -> None:
    """Use ``threads`` CPU threads (0: every core): torch's own, or with ``shared`` that
    many workers that share the work (:mod:`lrrtool.workers`), each with one torch thread,
    which keep their speed beside other busy processes. Several OpenMP threads spin-wait
    for each other, and beside another busy process that has taken the same run from 4 s
    to over 130 s here."""
    if threads < 0:
        raise LRRError(f"threads must be >= 0, got {threads}", parameter="threads")
    if shared:
        one_heap()
    count = threads or workers.cpu_count()
    torch.set_num_threads(1 if shared else count)
    workers.set_workers(count if shared else None)


#: Share of the memory budget the process's resident size must pass before
#: :func:`release_freed_memory` hands freed memory back. Below it the heap keeps its
#: freed blocks for the next tile's reuse: handed back after every tile, a 512x512 colour
#: photo's ``denoise`` faulted 14 GB of pages in anew (3.4M page faults; 41 s against
#: 34 s kept, at 816 MB resident against 786 MB).
TRIM_SHARE = 0.5


def release_freed_memory(budget_gib: float | None = None) -> None:
    """Hand memory freed by the last chunk or tile back to the system (glibc's
    ``malloc_trim``); with a ``budget_gib``, only once the process's resident size has
    passed ``TRIM_SHARE`` of it. Between chunks the heap keeps freed blocks below the
    mmap threshold (which glibc raises up to 32 MB as large blocks are freed), and the
    resident size grew chunk by chunk. A no-op where the C library has no ``malloc_trim``."""
    trim = _malloc_trim()
    if trim is None:
        return
    if budget_gib is not None:
        resident = resident_bytes()
        if resident is not None and resident < TRIM_SHARE * budget_gib * 2**30:
            return
    trim(0)


def resident_bytes() -> int | None:
    """The process's resident size now (Linux's ``/proc/self/statm``), or None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def trimming(callback: Callback | None, budget_gib: float | None = None) -> Callback:
    """``callback`` that first hands freed memory back (:func:`release_freed_memory`
    within ``budget_gib``): a tiled solve reports after each tile, and its heap otherwise
    keeps the tiles' freed blocks. Measured, one step of ``denoise`` on a 4032x3024
    photo, 2 workers: peak 4.00 GiB with one heap and no trim, 2.37 GiB with a heap per
    thread and the trim, 2.15 GiB with one heap and the trim, at 197-201 s either way."""

    def report(step: Progress) -> None:
        release_freed_memory(budget_gib)
        if callback is not None:
            callback(step)

    return report


@functools.cache
def _malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


#: glibc's ``mallopt`` parameter for the number of heaps (``M_ARENA_MAX``).
_M_ARENA_MAX = -8


def one_heap() -> None:
    """Make every thread of this process allocate from one glibc heap. By default each
    worker thread gets a heap of its own, and each keeps the blocks it freed (below the
    mmap threshold, which glibc raises up to 32 MB) for its own reuse: measured on a
    2400x1800 photo, 2 steps of ``denoise`` on 2 workers, peak 2.43 GiB with a heap per
    thread and 2.04 GiB with one, at the same speed (103 s and 100 s); a fixed 4 MB mmap
    threshold instead took it to 1.42 GiB but 141 s (every large block faulted in anew).
    One heap needs :func:`trimming` as well: it is trimmed only from its top, and at 12
    megapixels it alone peaked at 4.00 GiB. Call before the workers start; a no-op where
    the C library has no ``mallopt``."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


def peak_memory_gib(device: torch.device | str) -> float | None:
    """Peak resident memory of this process so far (GiB; None where the platform does not
    say), or on CUDA the peak of torch's allocator on that device.

    On Linux from ``VmHWM`` in ``/proc/self/status``, which starts afresh with the program:
    ``getrusage``'s ``ru_maxrss`` survives ``execve``, so a process started from a large
    one reports at least its parent's size at the fork (measured: 3.01 GiB for a child of
    a 3 GiB parent that itself held 13 MB). Elsewhere ``ru_maxrss`` (kB on Linux, bytes on
    macOS)."""
    if torch.device(device).type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    try:
        status = Path("/proc/self/status").read_text()
        return round(int(status.split("VmHWM:")[1].split()[0]) / 2**20, 3)
    except (OSError, IndexError, ValueError):
        pass
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**30 if sys.platform == "darwin" else 2**20), 3)
