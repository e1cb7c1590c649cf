"""Scale-out on Ray: one task per input file (or video segment), the same work as the sequential run.

Only this module imports ``ray``, and only when a request asks for Ray (the optional extra:
``pip install -e ".[ray]"``). A task runs the command's per-input work on a worker, with
``threads`` torch threads (``num_cpus=threads``) or one GPU (``num_gpus=1``) when the
device is CUDA; it reads and writes the paths it is given, so a cluster needs a shared
filesystem. A task whose worker process dies is run again (``RETRIES``); an input's own
error (:class:`~lrrtool.errors.LRRError`) is returned as a value, so it is reported for
that input exactly as the sequential run reports it. No terminal I/O here: the caller
is told of each finished task through ``finished``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lrrtool import media
from lrrtool.errors import LRRError

#: Times a task is run again after its worker process died (Ray's ``max_retries``).
RETRIES = 3
#: Seconds to wait for cancelled tasks' workers to stop after Ctrl-C, and for a cluster's
#: address to answer.
CANCEL_WAIT = 10.0
CONNECT_TIMEOUT = 5.0

#: ``work(path, target)``: one input's report entry (it writes ``target``).
Work = Callable[[Path, Path], dict]
#: ``(entry, None)`` for a finished input, ``(None, error)`` for a failed one.
Outcome = tuple[dict | None, LRRError | None]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LRRError('ray needs Ray, an optional extra: pip install -e ".[ray]"', parameter="ray") from None
    return ray


@contextmanager
def session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected for the duration: to ``address``, else to ``RAY_ADDRESS`` when it is
    set, else to a local instance started here (``num_cpus`` CPUs, default all) and shut
    down at the end. An instance the caller already started is used and left running."""
    ray = _import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
    if ray.is_initialized():
        yield ray
        return
    try:
        if address:
            ray.init(address=address, logging_level="ERROR", configure_logging=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR", configure_logging=False)
    except Exception as error:  # ray raises ConnectionError, RuntimeError, ValueError ... here
        where = address or "a local instance"
        raise LRRError(
            f"ray: cannot start or reach Ray at {where} ({str(error).splitlines()[0]})", parameter="ray"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """Refuse at once an address where nothing answers: Ray itself retries for minutes,
    printing a warning every few seconds (measured: still retrying after 10 minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise LRRError(
            f"ray_address must look like HOST:PORT or ray://HOST:PORT, got {address!r}", parameter="ray_address"
        )
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise LRRError(
            f"ray: nothing answers at {address} ({reason}); start the head with 'ray start --head' "
            "and give the address it prints",
            parameter="ray",
        ) from None


def _run_one(work: Work, path: Path, target: Path, threads: int) -> Outcome:
    """The task: ``work(path, target)`` with ``threads`` torch threads; an ``LRRError``
    comes back as a value (it pickles with its parameter names)."""
    torch.set_num_threads(threads)
    try:
        return work(path, target), None
    except LRRError as error:
        return None, error


def run_tasks(
    ray: Any,
    jobs: Sequence[tuple[Path, Path]],
    work: Work,
    *,
    threads: int,
    gpus: int,
    finished: Callable[[int, Outcome], None],
) -> None:
    """Run ``work`` on every ``(path, target)`` of ``jobs`` as one Ray task each, at most
    as many at once as the cluster's resources allow; ``finished(index, outcome)`` is
    called on the driver as each ends, in the order they end. A task that Ray gives up
    on (its worker died ``RETRIES + 1`` times, or it raised an unexpected error) is a
    failed input with Ray's reason. Ctrl-C stops the tasks not yet finished, removes what
    they had half written (:func:`lrrtool.media.remove_partial`) and is raised again."""
    remote = ray.remote(_run_one).options(num_cpus=threads, num_gpus=gpus, max_retries=RETRIES)
    shared = ray.put(work)
    index = {remote.remote(shared, path, target, threads): k for k, (path, target) in enumerate(jobs)}
    pending = list(index)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                finished(index[ref], _outcome(ray, ref))
    except KeyboardInterrupt:
        # A polite cancel does not reach a task inside a native call (measured: a sleeping
        # task ran on), so the workers are stopped, then their half-written files removed.
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.wait(pending, num_returns=len(pending), timeout=CANCEL_WAIT)
        for ref in pending:
            media.remove_partial(jobs[index[ref]][1])
        raise


def _outcome(ray: Any, ref: Any) -> Outcome:
    try:
        entry, error = ray.get(ref)
    except ray.exceptions.RayError as failure:
        reason = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
        return None, LRRError(f"the Ray task failed ({reason})")
    return entry, error
