r"""One optimisation loop for every task: Adam on ``params`` minimising ``objective()``.

The objective is any differentiable scalar (data term + :math:`\lambda R`). The loop
runs a cosine learning-rate schedule, stops when the loss changes by less than ``tol``
(relative) between checks, and raises ``LRRError`` as soon as the loss or a parameter
becomes NaN/Inf. Checks and progress reports happen every ``check_every`` steps, so the
loop synchronises with the device only then.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lrrtool.errors import LRRError


@dataclass(frozen=True)
class Progress:
    """What a progress callback receives."""

    iteration: int
    total: int
    loss: float
    lr: float


@dataclass
class SolveResult:
    iterations: int
    loss: float
    converged: bool
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)
    #: What the task chose on its own (e.g. inpainting's start), for reports.
    details: dict[str, object] = field(default_factory=dict)


SCHEDULES = ("cosine", "constant")


def minimize(
    objective: Callable[[], Tensor],
    params: Sequence[Tensor],
    *,
    iters: int = 300,
    lr: float = 0.01,
    schedule: str = "cosine",
    final_lr_fraction: float = 0.05,
    tol: float = 1e-6,
    check_every: int = 10,
    callback: Callable[[Progress], None] | None = None,
) -> SolveResult:
    """Minimise ``objective()`` over ``params`` with Adam; see the module docstring.

    Args:
        objective: closure returning a scalar tensor that depends on ``params``.
        params: leaf tensors with ``requires_grad=True``; updated in place.
        iters: maximum number of Adam steps.
        lr: initial step size (in the units of the parameters).
        schedule: ``cosine`` (``lr`` to ``final_lr_fraction * lr``) or ``constant``.
        tol: stop when ``|L_prev - L| <= tol * |L_prev|`` between two checks; 0 disables.
        check_every: steps between convergence/NaN checks and progress callbacks.
        callback: receives a :class:`Progress` at every check.
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise LRRError(f"iters must be a positive integer, got {iters!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise LRRError(f"the learning rate must be a finite number > 0, got {lr!r}")
    if schedule not in SCHEDULES:
        raise LRRError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if tol < 0:
        raise LRRError(f"tol must be >= 0, got {tol}")
    params = list(params)
    optimizer = torch.optim.Adam(params, lr=lr)
    start = time.perf_counter()
    history: list[tuple[int, float]] = []
    previous = math.inf
    converged = False
    loss_value = math.nan
    iteration = 0
    for iteration in range(1, iters + 1):
        optimizer.param_groups[0]["lr"] = _step_size(lr, iteration - 1, iters, schedule, final_lr_fraction)
        optimizer.zero_grad(set_to_none=True)
        loss = objective()
        loss.backward()
        optimizer.step()
        if iteration % check_every and iteration != iters:
            continue
        loss_value = float(loss.detach())
        _check_finite(loss_value, params, iteration, lr)
        history.append((iteration, loss_value))
        if callback is not None:
            callback(Progress(iteration, iters, loss_value, optimizer.param_groups[0]["lr"]))
        if tol > 0 and math.isfinite(previous) and abs(previous - loss_value) <= tol * abs(previous):
            converged = True
            break
        previous = loss_value
    with torch.no_grad():
        loss_value = float(objective().detach())
    _check_finite(loss_value, params, iteration, lr)
    return SolveResult(iteration, loss_value, converged, time.perf_counter() - start, history)


def _step_size(lr: float, step: int, total: int, schedule: str, final_fraction: float) -> float:
    if schedule == "constant" or total <= 1:
        return lr
    cosine = 0.5 * (1 + math.cos(math.pi * step / (total - 1)))
    return lr * (final_fraction + (1 - final_fraction) * cosine)


def _check_finite(loss: float, params: list[Tensor], iteration: int, lr: float) -> None:
    bad_param = not all(bool(torch.isfinite(p).all()) for p in params)
    if math.isfinite(loss) and not bad_param:
        return
    what = "a parameter" if math.isfinite(loss) else f"the loss ({loss})"
    raise LRRError(
        f"the optimisation diverged at iteration {iteration}: {what} became NaN/Inf; "
        f"lower the learning rate (now {lr:g}) or the regularisation weight"
    )
