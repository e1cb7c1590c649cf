r"""The solvers every task calls: each minimises a data term (a forward model) plus a
low-rank prior, and reports through one :class:`Progress` callback and one
:class:`SolveResult`.

- :func:`adam`: the EDLRR paper's route. Adam on a differentiable objective of ``x``
  (data term + :math:`\lambda R(x)` with any estimator), a cosine step-size schedule,
  projection onto the forward model's constraint after each step, and the prior's lift
  re-fitted every ``refresh_every`` steps. :func:`minimize` is the same loop over any
  list of parameters (rating completion uses it).
- :func:`proximal_gradient`: the fixed-point iteration
  :math:`x_{k+1} = P\big(\mathrm{prox}_{\tau_k R}(x_k - \eta\nabla f(x_k))\big)` with a
  schedule of thresholds :math:`\tau_k` (inpainting's decreasing noise level, WNNM's
  re-estimated noise for denoising).
- :func:`robust_pca`: the inexact augmented Lagrangian method (Lin, Chen & Ma 2010) for
  :math:`\min R(L) + w\|S\|_1` s.t. :math:`V = L + S`, whose singular-value step is the
  prior's prox.

Each stops early when its stop rule fires (``converged`` in the result) and raises
``LRRError`` with a hint as soon as it diverges: a NaN/Inf, a loss that grows a hundred
fold, or an estimate that leaves its data range far behind.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lrrtool.core.matfun import gram, small_side
from lrrtool.errors import LRRError
from lrrtool.forward import ForwardModel, SparseNoise, soft_threshold
from lrrtool.priors import LowRankPrior


@dataclass(frozen=True)
class Progress:
    """What a progress callback receives: step ``iteration`` of at most ``total`` of the
    task's ``phase`` (``start``, ``solve``), and the solver's stop metric (``metric``
    names it: ``loss``, ``change`` or ``residual``). When a stop rule ends a run early,
    a last report has ``total == iteration``. ``part``: the fraction of the next step
    done so far (a tiled step reports as its tiles finish); 0 at a step's end."""

    iteration: int
    total: int
    metric: str
    value: float
    phase: str = "solve"
    part: float = 0.0


@dataclass
class SolveResult:
    """``iterations`` run; the stop ``metric`` and its last ``value``; ``converged``: the
    stop rule fired (the metric fell below the solver's tolerance); ``history``:
    ``(iteration, value)`` pairs; ``details``: choices the task made on its own (e.g.
    inpainting's start), for reports."""

    iterations: int
    metric: str
    value: float
    converged: bool
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)


Callback = Callable[[Progress], None]

#: Solver names as the command line offers them (``robust-pca`` is ``threshold`` for separation).
SOLVERS = ("threshold", "adam")
#: The largest Adam step size accepted, in the units of the parameters (pixels in [0, 1]).
MAX_LR = 1.0
#: A loss this many times its starting value means divergence.
LOSS_GROWTH = 100.0
#: Adam's divergence bounds for images and videos in [0, 1]: far outside the data range.
PIXEL_BOUNDS = (-1.0, 2.0)
#: "Settled": the RMS change of an estimate in [0, 1] units below a quarter grey level.
SETTLED = 1 / (4 * 255)


def check_learning_rate(lr: float) -> None:
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and 0 < lr <= MAX_LR):
        raise LRRError(f"lr must be in (0, {MAX_LR:g}], got {lr!r}", parameter="lr")


def minimize(
    objective: Callable[[], Tensor],
    params: Sequence[Tensor],
    *,
    iters: int = 300,
    lr: float = 0.01,
    final_lr_fraction: float = 0.05,
    tol: float = 1e-6,
    check_every: int = 10,
    before_step: Callable[[int], None] | None = None,
    after_step: Callable[[], None] | None = None,
    bounds: tuple[float, float] | None = None,
    callback: Callback | None = None,
) -> SolveResult:
    """Minimise ``objective()`` over ``params`` with Adam.

    Args:
        objective: closure returning a scalar tensor that depends on ``params``.
        params: leaf tensors with ``requires_grad=True``; updated in place.
        iters: maximum number of Adam steps.
        lr: initial step size (in the units of the parameters); a cosine schedule takes
            it to ``final_lr_fraction * lr``.
        tol: stop rule: ``|L_prev - L| <= tol * |L_prev|`` between two checks; 0 disables.
        check_every: steps between convergence/NaN checks and progress callbacks (the
            only host synchronisations of the loop).
        before_step: called with the step index (0-based) before each objective.
        after_step: called (under ``no_grad``) after each Adam step, e.g. a projection.
        bounds: ``(low, high)``: the parameters leaving that range at a check is divergence.
        callback: receives a :class:`Progress` at every check.
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise LRRError(f"iters must be a positive integer, got {iters!r}", parameter="iters")
    check_learning_rate(lr)
    if not tol >= 0:
        raise LRRError(f"tol must be >= 0, got {tol}", parameter="tol")
    params = list(params)
    optimizer = torch.optim.Adam(params, lr=lr)
    start = time.perf_counter()
    history: list[tuple[int, float]] = []
    previous = math.inf
    converged = False
    iteration = 0
    initial = math.nan
    for iteration in range(1, iters + 1):
        optimizer.param_groups[0]["lr"] = _cosine(lr, iteration - 1, iters, final_lr_fraction)
        if before_step is not None:
            before_step(iteration - 1)
        optimizer.zero_grad(set_to_none=True)
        loss = objective()
        if iteration == 1:
            initial = float(loss.detach())
        loss.backward()
        optimizer.step()
        if after_step is not None:
            with torch.no_grad():
                after_step()
        if iteration % check_every and iteration != iters:
            continue
        loss_value = float(loss.detach())
        _check_diverged(loss_value, initial, params, bounds, iteration, lr)
        history.append((iteration, loss_value))
        if callback is not None:
            callback(Progress(iteration, iters, "loss", loss_value))
        if tol > 0 and math.isfinite(previous) and abs(previous - loss_value) <= tol * abs(previous):
            converged = True
            _finish(callback, iteration, "loss", loss_value)
            break
        previous = loss_value
    with torch.no_grad():
        loss_value = float(objective().detach())
    _check_diverged(loss_value, initial, params, bounds, iteration, lr)
    return SolveResult(iteration, "loss", loss_value, converged, time.perf_counter() - start, history)


def adam(
    objective: Callable[[Tensor], Tensor],
    x0: Tensor,
    *,
    forward: ForwardModel | None = None,
    prior: LowRankPrior | None = None,
    refresh_every: int | None = None,
    iters: int = 300,
    lr: float = 0.01,
    tol: float = 1e-6,
    bounds: tuple[float, float] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, SolveResult]:
    """Minimise ``objective(x)`` from ``x0`` with Adam (see :func:`minimize`).

    ``forward``: after every step ``x`` is projected onto its constraint (inpainting: the
    observed pixels), so only the free entries move; Adam is elementwise, so this equals
    optimising the free entries alone. ``prior``: its lift is re-fitted on ``x`` every
    ``refresh_every`` steps (None: once, at the start). ``bounds``: ``x`` leaving that
    range is divergence (images in [0, 1]: ``(-1, 2)``). Returns ``(x, result)``.
    """
    x = x0.detach().clone().requires_grad_(True)
    every = refresh_every or iters + 1

    def before_step(step: int) -> None:
        if prior is not None and step % every == 0:
            prior.refresh(x.detach())

    def project() -> None:
        x.copy_(forward.project(x))

    result = minimize(
        lambda: objective(x),
        [x],
        iters=iters,
        lr=lr,
        tol=tol,
        before_step=before_step,
        after_step=None if forward is None else project,
        bounds=bounds,
        callback=callback,
    )
    return x.detach(), result


#: The share of a regrouping step that finding the groups takes, for progress (measured:
#: 3.8 s of 10.4 s per step of denoise at 512x512 colour).
REFRESH_SHARE = 0.4
#: A schedule maps (step, current point) to the prox's (tau, debias).
Schedule = Callable[[int, Tensor], tuple[Tensor | float, Tensor | float]]


def proximal_gradient(
    forward: ForwardModel,
    prior: LowRankPrior,
    x0: Tensor,
    schedule: Schedule,
    *,
    iters: int,
    step: float = 1.0,
    refresh_every: int | None = None,
    refine: int = 0,
    tol: float = SETTLED,
    min_iters: int = 1,
    callback: Callback | None = None,
) -> tuple[Tensor, SolveResult]:
    r"""The fixed-point iteration

    .. math:: y_k = x_k - \eta\nabla f(x_k),\qquad
              x_{k+1} = P\big(\mathrm{prox}_{R}(y_k;\ \tau_k, \beta_k)\big)

    with ``f``, ``P`` from ``forward``, the prox from ``prior`` and
    :math:`(\tau_k, \beta_k)` = ``schedule(k, y_k)``. The prior's lift is re-fitted on
    :math:`y_k` every ``refresh_every`` steps (None: at the first step only).

    Stop rule: after at least ``min_iters`` steps, the RMS change
    :math:`\|x_{k+1} - x_k\|/\sqrt{N}` (the ``change`` metric, pixel units) falls to
    ``tol`` or below. A schedule that must run to its end passes ``min_iters = iters``:
    ``converged`` then says whether the estimate had settled by the last step (moved
    less than ``tol``, by default a quarter grey level). Returns ``(x, result)``.
    """
    began = time.perf_counter()
    every = refresh_every or iters + 1
    x = x0
    history: list[tuple[int, float]] = []
    change, converged, k = math.nan, False, 0

    def within(start: float, share: float):
        """The step's progress as the lift's parts finish: ``start + share * done / total``."""
        if callback is None:
            return None
        return lambda done, total: callback(Progress(k - 1, iters, "change", change, part=start + share * done / total))

    if callback is not None:
        callback(Progress(0, iters, "change", change))
    for k in range(1, iters + 1):
        y = forward.gradient_step(x, step)
        regroup = (k - 1) % every == 0
        if regroup:
            prior.refresh(y, progress=within(0.0, REFRESH_SHARE))
        tau, debias = schedule(k - 1, y)
        start = REFRESH_SHARE if regroup else 0.0
        updated = forward.project(prior.prox(y, tau, debias, refine=refine, progress=within(start, 1 - start)))
        change = float(torch.linalg.vector_norm(updated - x)) / math.sqrt(x.numel())
        x = updated
        _record(history, callback, Progress(k, iters, "change", change), "lower lam or try another reg")
        converged = change <= tol
        if converged and k >= min_iters:
            _finish(callback, k, "change", change)
            break
    return x, SolveResult(k, "change", change, converged, time.perf_counter() - began, history)


def robust_pca(
    forward: SparseNoise,
    prior: LowRankPrior,
    *,
    weight: float,
    iters: int = 100,
    tol: float = 1e-5,
    callback: Callback | None = None,
) -> tuple[Tensor, SolveResult]:
    r"""Inexact ALM (Lin et al. 2010, Algorithm 5) for :math:`R(L) + w\|S\|_1`, :math:`V = L + S`,
    with ``V`` = ``forward.observed``:

    ``L = prior.prox(V - S + Y/mu, 1/mu)``, ``S = shrink_{w/mu}(V - L + Y/mu)``,
    ``Y += mu (V - L - S)``, ``mu *= 1.5`` up to ``1e7 mu_0``. Stop rule:
    ``||V - L - S||_F <= tol ||V||_F`` (the ``residual`` metric). Holds ``V, L, S, Y``,
    two buffers the steps reuse and the prox's temporaries. With ``nuclear`` this is
    exactly principal component pursuit.
    Returns ``(L, result)``.
    """
    began = time.perf_counter()
    V = forward.observed
    spectral = torch.linalg.eigvalsh(gram(small_side(prior.lift.matrices(V))[0]))[..., -1].max().clamp_min(0).sqrt()
    if not float(spectral) > 0:
        raise LRRError("the video is blank (all frames zero): nothing to separate")
    norm_v = torch.linalg.vector_norm(V)
    mu = float(1.25 / spectral)
    mu_max = mu * 1e7
    Y = V / torch.maximum(spectral, V.abs().max() / weight)
    S = torch.zeros_like(V)
    L = V
    A, B = torch.empty_like(V), torch.empty_like(V)  # the step's buffers: no allocation per step
    history: list[tuple[int, float]] = []
    residual = math.inf
    k = 0
    for k in range(1, iters + 1):
        torch.add(V, Y, alpha=1 / mu, out=A)  # V + Y/mu
        L = prior.prox(torch.sub(A, S, out=B), 1 / mu)
        E = torch.sub(A, L, out=B)
        S = soft_threshold(E, weight / mu, out=S)
        Z = torch.sub(V, L, out=A).sub_(S)
        Y.add_(Z, alpha=mu)
        mu = min(mu * 1.5, mu_max)
        residual = float(torch.linalg.vector_norm(Z) / norm_v)
        _record(history, callback, Progress(k, iters, "residual", residual), "try solver adam or another reg")
        if residual <= tol:
            _finish(callback, k, "residual", residual)
            break
    return L, SolveResult(k, "residual", residual, residual <= tol, time.perf_counter() - began, history)


def _record(history: list[tuple[int, float]], callback: Callback | None, step: Progress, hint: str) -> None:
    """Keep one step's metric and report it; a NaN/Inf metric is divergence."""
    if not math.isfinite(step.value):
        raise LRRError(f"the solver diverged at step {step.iteration} ({step.metric} {step.value}); {hint}")
    history.append((step.iteration, step.value))
    if callback is not None:
        callback(step)


def _finish(callback: Callback | None, step: int, metric: str, value: float) -> None:
    """A stop rule ended the run at ``step``: the last report says the run is complete."""
    if callback is not None:
        callback(Progress(step, step, metric, value))


def _cosine(lr: float, step: int, total: int, final_fraction: float) -> float:
    if total <= 1:
        return lr
    cosine = 0.5 * (1 + math.cos(math.pi * step / (total - 1)))
    return lr * (final_fraction + (1 - final_fraction) * cosine)


def _check_diverged(
    loss: float, initial: float, params: list[Tensor], bounds: tuple[float, float] | None, iteration: int, lr: float
) -> None:
    """Raise with a hint when the loss or a parameter is NaN/Inf, the loss grew
    ``LOSS_GROWTH`` fold, or a parameter left ``bounds``."""
    what = None
    if not math.isfinite(loss):
        what = f"the loss became {loss}"
    elif not all(bool(torch.isfinite(p).all()) for p in params):
        what = "a parameter became NaN/Inf"
    elif math.isfinite(initial) and loss > LOSS_GROWTH * abs(initial) + torch.finfo(torch.float32).tiny:
        what = f"the loss grew from {initial:.3g} to {loss:.3g}"
    elif bounds is not None:
        low, high = min(float(p.detach().min()) for p in params), max(float(p.detach().max()) for p in params)
        if low < bounds[0] or high > bounds[1]:
            what = f"the estimate left its range (values from {low:.3g} to {high:.3g})"
    if what is not None:
        raise LRRError(
            f"the optimisation diverged at iteration {iteration}: {what}; "
            f"lower the learning rate (now {lr:g}) or the regularisation weight"
        )
