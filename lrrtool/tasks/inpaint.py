r"""Inpainting: fill the masked pixels of an image by low-rank regularised completion.

Only the missing pixels are variables; observed pixels are copied into the result
unchanged. Every solve starts from the biharmonic interpolant (the minimiser of
:math:`\sum_c \|\Delta X_c\|_2^2` over the missing pixels, by conjugate gradients) or,
where the mask has wide holes and a held-out test says so, from a global rank-``r``
completion (:func:`choose_start`), then refines it with a low-rank prior on

- ``model="patches"`` (default): :math:`K \times D` groups :math:`G_g(X)` of similar
  ``p x p`` patches (a reference and its ``K-1`` nearest neighbours in a window; all
  channels jointly, so colours share one low-rank structure), centred by their mean patch;
  groups are re-found on the current estimate every ``regroup_every`` steps;
- ``model="global"``: the EDLRR paper's model, each channel one ``H x W`` matrix.

Two solvers, chosen by ``solver``:

- ``threshold`` (default): exact reweighted singular-value thresholding of every group
  (:func:`lrrtool.core.prox.reweighted_threshold`) with a decreasing noise level
  :math:`\delta_t` from ``noise_start`` to ``noise_end``, threshold
  :math:`\tau_t = \lambda\sqrt{K}\delta_t^2` and weights :math:`h'(\hat\sigma)` of the
  chosen penalty; shrunk patches are averaged back and the observed pixels re-imposed
  after every step (a projected fixed-point iteration). With ``reg="lnn"`` this is the
  WNNM weighting.
- ``adam``: the EDLRR paper's route: Adam on
  :math:`\mu \sum_c \|\Delta X_c\|^2 + \lambda \sum_g R(G_g(X) - \bar G_g(X))` with ``R``
  from any estimator. Measured slower and no better (``bench/inpaint.py``).

Colour: channels are handled jointly in the patch model (one patch vector holds all
channels) and separately in the global model (one matrix per channel), as in the paper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.core import LowRankRegularizer, Progress, SolveResult, minimize
from lrrtool.core.prox import reweighted_threshold
from lrrtool.errors import LRRError
from lrrtool.tasks.completion import CompletionSettings, Entries, complete
from lrrtool.tasks.patches import PatchGroups, all_patches, group_indices
from lrrtool.tasks.settings import SolverSettings

MODELS = ("patches", "global")
#: ``auto``: :func:`choose_start`; ``biharmonic``: always :func:`biharmonic_fill`.
STARTS = ("auto", "biharmonic")
#: Ranks that :func:`choose_start` tries, and the pixels-from-known radius of a "wide" hole.
START_RANKS = (1, 2, 3, 5, 8, 12)
WIDE_HOLE_RADIUS = 4
#: ``lrr``: the solvers above; ``dlrl``: the DLRL paper's network (:func:`_dlrl`).
INPAINT_METHODS = ("lrr", "dlrl")


@dataclass(frozen=True)
class InpaintSettings(SolverSettings):
    """Settings of :func:`inpaint`; the defaults are the measured best (``bench/inpaint.py``).

    ``lam``, ``iters`` and ``regroup_every`` left as None take the solver's default
    (``choice_defaults``); ``smooth`` and ``lr`` are used by ``adam`` only,
    ``noise_start`` and ``noise_end`` (pixel units, [0, 1]) by ``threshold`` only.
    ``start``, ``start_ranks`` (increasing) and ``start_margin`` (dB) go to
    :func:`choose_start`.
    """

    reg: str = "lnn"
    lam: float | None = None
    model: str = "patches"
    smooth: float = 1.0
    iters: int | None = None
    lr: float = 0.02
    patch: int = 5
    group: int = 32
    stride: int = 5
    window: int = 15
    regroup_every: int | None = None
    noise_start: float = 0.05
    noise_end: float = 0.004
    method: str = "lrr"
    width: int = 80
    factors: int = 2
    p_block: float = 1.0
    dlrl_iters: int = 500
    dlrl_lr: float = 0.005
    start: str = "auto"
    start_ranks: tuple[int, ...] = START_RANKS
    start_margin: float = 2.0

    default_gamma: ClassVar[float | None] = 1e-3  # singular values of [0, 1] patch groups
    choice_defaults: ClassVar[dict[str, dict[str, object]]] = {
        "threshold": {"lam": 4.0, "iters": 16, "regroup_every": 4},
        "adam": {"lam": 0.3, "iters": 200, "regroup_every": 50},
    }
    at_least_one: ClassVar[tuple[str, ...]] = ("iters", "patch", "group", "stride", "window", "regroup_every")

    def dlrl_settings(self) -> CompletionSettings:
        """The :class:`CompletionSettings` of ``method="dlrl"``."""
        return CompletionSettings(
            method="dlrl",
            width=self.width,
            factors=self.factors,
            p_block=self.p_block,
            iters=self.dlrl_iters,
            lr=self.dlrl_lr,
            seed=self.seed,
        )

    def validate(self) -> None:
        super().validate()
        s = self.resolved()
        if s.model not in MODELS:
            raise LRRError(f"unknown model {s.model!r}; choose one of: {', '.join(MODELS)}")
        if not s.lam >= 0:
            raise LRRError(f"--lam must be >= 0, got {s.lam}")
        if not s.smooth >= 0:
            raise LRRError(f"--smooth must be >= 0, got {s.smooth}")
        if s.method not in INPAINT_METHODS:
            raise LRRError(f"unknown method {s.method!r}; choose one of: {', '.join(INPAINT_METHODS)}")
        if s.method == "dlrl":
            self.dlrl_settings().validate()
        if s.start not in STARTS:
            raise LRRError(f"unknown start {s.start!r}; choose one of: {', '.join(STARTS)}")
        ranks = s.start_ranks
        if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks):
            raise LRRError(f"start ranks must be integers >= 1, got {ranks!r}")
        if list(ranks) != sorted(set(ranks)):
            raise LRRError(f"start ranks must be increasing, got {ranks!r}")
        if not math.isfinite(s.start_margin):
            raise LRRError(f"start margin must be a finite number of dB, got {s.start_margin}")
        if not (0 < s.noise_end <= s.noise_start):
            raise LRRError(f"need 0 < noise_end <= noise_start, got {s.noise_end} and {s.noise_start}")


def push_pull_fill(image: Tensor, fill: Tensor) -> Tensor:
    """Fast initial fill: mask-aware averages over a pyramid, finest known level wins.

    ``image`` ``(C, H, W)``, ``fill`` bool ``(H, W)``; returns ``(C, H, W)`` with observed
    pixels unchanged. Every missing pixel gets a value as long as one pixel is observed.
    """
    known = (~fill).to(image.dtype)[None, None]
    values = (image * known[0])[None]
    levels = [(values, known)]
    while min(levels[-1][1].shape[-2:]) > 1 and bool((levels[-1][1] == 0).any()):
        v, k = levels[-1]
        levels.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(k, 2, ceil_mode=True)))
    v, k = levels[-1]
    estimate = v / k.clamp_min(1e-12)
    for v, k in reversed(levels[:-1]):
        up = F.interpolate(estimate, size=v.shape[-2:], mode="bilinear", align_corners=False)
        estimate = torch.where(k > 0, v / k.clamp_min(1e-12), up)
    return torch.where(fill, estimate[0], image)


def laplacian_energy(x: Tensor) -> Tensor:
    r""":math:`\sum \|\Delta x\|^2` over all pixels of ``(C, H, W)`` (replicate borders)."""
    return _laplacian(x).square().sum()


def _laplacian(x: Tensor) -> Tensor:
    padded = F.pad(x.unsqueeze(0), (1, 1, 1, 1), mode="replicate")[0]
    return padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:] - 4 * x


def biharmonic_fill(image: Tensor, fill: Tensor, *, iters: int = 500, tol: float = 1e-6) -> Tensor:
    r"""Biharmonic inpainting: :math:`\arg\min \sum_c \|\Delta X_c\|_2^2` over the pixels
    where ``fill`` is True, the others fixed to ``image``.

    The normal equations :math:`P^\top \Delta^\top \Delta P\,x = -P^\top \Delta^\top \Delta\,y`
    are solved by conjugate gradients, for at most ``iters`` steps or until the residual
    norm falls below ``tol`` times its start. The condition number grows like the fourth
    power of the hole's width, so CG alone stalls on big holes. The start is therefore the
    same problem solved at half resolution (recursively; a coarse pixel is known when any
    of its four children is), upsampled: cascadic multigrid. On the coarsest level the
    start is :func:`push_pull_fill`. Holes up to about 30 px converge. Wider ones do not
    converge in 500 steps, and the result then depends on the start. The cascade brought
    the 134 px TNNR ``square`` from 15.92 to 17.01 dB over 9 images, but it lost on the
    bundled facade (``bench/inpaint.py``). ``image`` ``(C, H, W)``, ``fill`` bool
    ``(H, W)``; returns ``(C, H, W)``. Converged, it is the minimiser of
    ``skimage.restoration.inpaint_biharmonic`` up to its boundary handling.
    """
    free = fill.to(image.dtype)
    x = push_pull_fill(image, fill)
    if min(fill.shape) >= 32:
        known = (~fill).to(image.dtype)[None]
        coarse_known = F.avg_pool2d(known, 2, ceil_mode=True)
        coarse = F.avg_pool2d(image * known, 2, ceil_mode=True) / coarse_known.clamp_min(1e-12)
        coarse_fill = coarse_known[0] == 0
        if bool(coarse_fill.any()):
            coarse = biharmonic_fill(coarse.masked_fill(coarse_fill, 0), coarse_fill, iters=iters, tol=tol)
            up = F.interpolate(coarse[None], size=fill.shape, mode="bilinear", align_corners=False)[0]
            x = torch.where(fill, up, image)

    def normal(v: Tensor) -> Tensor:
        return _laplacian_adjoint(_laplacian(v)) * free

    residual = -normal(x)
    direction = residual.clone()
    rs = residual.square().sum()
    stop = tol**2 * rs
    for _ in range(iters):
        if rs <= stop:
            break
        applied = normal(direction * free)
        step = rs / (direction * applied).sum().clamp_min(torch.finfo(image.dtype).tiny)
        x = x + step * direction
        residual = residual - step * applied
        rs_next = residual.square().sum()
        direction = residual + (rs_next / rs) * direction
        rs = rs_next
    return torch.where(fill, x, image)


def low_rank_fills(
    image: Tensor, fill: Tensor, start: Tensor, ranks: Sequence[int], *, iters: int = 100, ladder: bool = True
) -> list[Tensor]:
    r"""Hard-impute completions at the increasing ranks ``ranks``, each channel one
    ``H x W`` matrix: :math:`X \leftarrow P_\Omega(Y) + P_{\Omega^\perp}(\mathrm{clamp}(T_r(X), 0, 1))`,
    ``iters`` sweeps per rank, :math:`T_r` the best rank-``r`` approximation.

    With ``ladder``, rank ``r`` starts from the rank before it (``start`` for the first);
    otherwise every rank starts from ``start``. Alternating projection is not convex and
    either way can stall at a wrong fixed point: a planted rank-2 image behind a block
    ends at 19 % error at rank 2 from the biharmonic start, at 3e-16 via rank 1
    (``tests/test_tasks.py``), while smooth rings are completed at rank 5 directly and
    missed via the ladder. :math:`T_r` is tracked by one step of subspace
    iteration per sweep (``Q`` ``(C, W, r)`` carried over, new columns from the right
    singular vectors of ``start``): thin products and QRs of ``(C, *, r)`` instead of an
    SVD per sweep. ``image``, ``start`` ``(C, H, W)``; ``fill`` bool ``(H, W)``; returns
    one ``(C, H, W)`` per rank, in [0, 1] under ``fill`` and ``image`` elsewhere.
    """
    if not ranks:
        return []
    x = start
    basis = torch.linalg.svd(x, full_matrices=False).Vh.transpose(-1, -2)  # (C, W, min(H, W))
    q = basis[..., :0]
    fills = []
    for rank in ranks:
        if not ladder:
            x, q = start, basis[..., :0]
        q = torch.linalg.qr(torch.cat([q, basis[..., q.shape[-1] : rank]], dim=-1)).Q
        for _ in range(iters):
            u = torch.linalg.qr(x @ q).Q
            coefficients = u.transpose(-1, -2) @ x  # (C, r, W)
            q = torch.linalg.qr(coefficients.transpose(-1, -2)).Q
            x = torch.where(fill, (u @ coefficients).clamp(0, 1), image)
        fills.append(x)
    return fills


def dilate(mask: Tensor, radius: int) -> Tensor:
    """Pixels with a True pixel of ``mask`` ``(H, W)`` in the ``(2 radius + 1)``-square around them."""
    return F.max_pool2d(mask.to(torch.float32)[None, None], 2 * radius + 1, 1, radius)[0, 0] > 0


def wide_hole(fill: Tensor, radius: int) -> Tensor:
    """Pixels of ``fill`` ``(H, W)`` with no observed pixel in the ``(2 radius + 1)``-square around them."""
    return ~dilate(~fill, radius)


def choose_start(
    image: Tensor, fill: Tensor, *, ranks: Sequence[int] = START_RANKS, margin_db: float = 2.0
) -> tuple[Tensor, dict[str, object]]:
    """The start of the refinement: :func:`biharmonic_fill`, or :func:`low_rank_fills` at the
    rank that a held-out test picks, when the mask has wide holes and that rank wins.

    Smooth interpolation is right for thin holes (drops, text); a wide hole in a
    structured image (a facade's block) is filled far better by the rows and columns that
    repeat across it. The test hides the hole mask shifted by a third of the image (three
    shifts; pixels within 4 px of the real hole excluded), completes each way, and scores
    the squared error on the hidden pixels. The low-rank fill is taken only when its error
    is ``margin_db`` dB below the biharmonic's; otherwise the biharmonic one is kept. Masks
    with no pixel farther than 4 px from an observed one skip the test, and so do holes too
    big for a shifted copy to land on enough known pixels. Returns ``(start,
    details)``; ``details["start"]`` says which (``"biharmonic"``, ``"rank R"`` or
    ``"rank R (ladder)"``, see :func:`low_rank_fills`; both kinds are tested).
    """
    smooth = biharmonic_fill(image, fill)
    details: dict[str, object] = {"start": "biharmonic"}
    if not bool(wide_hole(fill, WIDE_HOLE_RADIUS).any()):
        return smooth, details
    h, w = fill.shape
    near = dilate(fill, WIDE_HOLE_RADIUS)
    # The direct first rank is the ladder's first step: tried once.
    candidates = [(True, rank) for rank in ranks] + [(False, rank) for rank in ranks[1:]]
    errors = torch.zeros(len(candidates) + 1, dtype=torch.float64)
    tests = 0
    for shift in ((h // 3, 0), (0, w // 3), (h // 3, w // 3)):
        hidden = torch.roll(fill, shift, (0, 1)) & ~near
        if int(hidden.sum()) < 0.3 * int(fill.sum()):
            continue
        both = fill | hidden
        blanked = image.masked_fill(both, 0)
        base = biharmonic_fill(blanked, both)
        fills = [base.clamp(0, 1), *low_rank_fills(blanked, both, base, ranks)]
        fills += low_rank_fills(blanked, both, base, ranks[1:], ladder=False)
        errors += torch.stack([(f - image)[:, hidden].square().mean() for f in fills]).double().cpu()
        tests += 1
    if not tests:
        return smooth, details
    best = int(errors[1:].argmin())
    gain_db = 10 * math.log10(float(errors[0]) / max(float(errors[1 + best]), 1e-20))
    details["start_test_gain_db"] = round(gain_db, 2)
    if gain_db < margin_db:
        return smooth, details
    ladder, rank = candidates[best]
    details["start"] = f"rank {rank}" + (" (ladder)" if ladder else "")
    used = [r for r in ranks if r <= rank] if ladder else [rank]
    return low_rank_fills(image, fill, smooth, used)[-1], details


def _laplacian_adjoint(y: Tensor) -> Tensor:
    """Adjoint of :func:`_laplacian` (replicate padding folds border terms back)."""
    x = torch.zeros_like(y, requires_grad=True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad((_laplacian(x) * y).sum(), x)
    return grad


def inpaint(
    image: Tensor,
    fill: Tensor,
    settings: InpaintSettings = InpaintSettings(),
    *,
    callback: Callable[[Progress], None] | None = None,
) -> tuple[Tensor, SolveResult]:
    """Fill the pixels where ``fill`` is True.

    Args:
        image: ``(C, H, W)`` float tensor; values under ``fill`` are ignored.
        fill: bool ``(H, W)`` on the same device, True = missing.
        settings: see :class:`InpaintSettings`.
        callback: progress of the solver.

    Returns:
        ``(result, solve_result)``; ``result[:, ~fill] == image[:, ~fill]`` exactly.
    """
    settings.validate()
    settings = settings.resolved()
    if image.ndim != 3:
        raise LRRError(f"expected an image of shape (C, H, W), got {tuple(image.shape)}")
    if fill.shape != image.shape[-2:]:
        raise LRRError(f"mask shape {tuple(fill.shape)} does not match image {tuple(image.shape[-2:])}")
    fill = fill.to(device=image.device, dtype=torch.bool)
    missing = int(fill.sum())
    if missing == 0:
        raise LRRError("the mask marks no pixel to fill (is it inverted? see --invert-mask)")
    if missing == fill.numel():
        raise LRRError("the mask marks every pixel as missing: nothing is observed to fill from")
    if not bool(torch.isfinite(image[:, ~fill]).all()):
        raise LRRError("the image holds NaN/Inf values")
    image = image.masked_fill(fill, 0)
    if settings.method == "dlrl":
        out, result = _dlrl(image, fill, settings, callback)
        return torch.where(fill, out.clamp(0, 1), image), result
    if settings.start == "auto":
        start, details = choose_start(image, fill, ranks=settings.start_ranks, margin_db=settings.start_margin)
    else:
        start, details = biharmonic_fill(image, fill), {"start": "biharmonic"}
    solve = _threshold if settings.solver == "threshold" else _adam
    out, result = solve(image, fill, start, settings, callback)
    result.details.update(details)
    with torch.no_grad():
        out = torch.where(fill, out.clamp(0, 1), image)
    return out, result


def _dlrl(
    image: Tensor, fill: Tensor, s: InpaintSettings, callback: Callable[[Progress], None] | None
) -> tuple[Tensor, SolveResult]:
    """The DLRL paper's image recovery: one ``H x C*W`` matrix (channels side by side)
    completed by :class:`lrrtool.tasks.completion.DLRL` from its observed pixels."""
    c, h, w = image.shape
    matrix = image.permute(1, 0, 2).reshape(h, c * w)
    observed = (~fill).repeat(1, c)
    rows, cols = observed.nonzero(as_tuple=True)
    entries = Entries(rows, cols, matrix[rows, cols], (h, c * w))
    generator = torch.Generator().manual_seed(s.seed)
    model, result = complete(entries, s.dlrl_settings(), generator=generator, callback=callback)
    return model.dense().reshape(h, c, w).permute(1, 0, 2), result


def _adam(
    image: Tensor, fill: Tensor, start: Tensor, s: InpaintSettings, callback: Callable[[Progress], None] | None
) -> tuple[Tensor, SolveResult]:
    reg = s.regularizer()
    low_rank = reg if s.model == "global" else _PatchGroupTerm(reg, s, fill)
    values = start[:, fill].clone().requires_grad_(True)

    def assemble() -> Tensor:
        x = image.clone()
        x[:, fill] = values
        return x

    def objective() -> Tensor:
        x = assemble()
        loss = s.smooth * laplacian_energy(x)
        if s.lam > 0:
            loss = loss + s.lam * low_rank(x)
        return loss

    result = minimize(objective, [values], iters=s.iters, lr=s.lr, callback=callback)
    with torch.no_grad():
        return assemble(), result


def _threshold(
    image: Tensor, fill: Tensor, start: Tensor, s: InpaintSettings, callback: Callable[[Progress], None] | None
) -> tuple[Tensor, SolveResult]:
    """Projected reweighted thresholding; ``loss`` in the result is the RMS change of the
    missing pixels in the last step (a fixed-point residual, not an objective)."""
    penalty = s.regularizer().function.penalty
    began = time.perf_counter()
    x = start
    groups_of: PatchGroups | None = None
    history: list[tuple[int, float]] = []
    change = math.nan
    for step in range(s.iters):
        delta = s.noise_start * (s.noise_end / s.noise_start) ** (step / max(s.iters - 1, 1))
        if s.model == "global":
            groups, mean, target = x, 0, fill
        else:
            if step % s.regroup_every == 0:
                groups_of = PatchGroups(x, patch=s.patch, group=s.group, stride=s.stride, window=s.window, select=fill)
            groups, target = groups_of.gather(x), fill & groups_of.covered
            mean = groups.mean(dim=-2, keepdim=True)
        size = min(groups.shape[-2:])
        shrunk = reweighted_threshold(groups - mean, penalty, s.lam * math.sqrt(size) * delta**2, size * delta**2)
        estimate = shrunk + mean if s.model == "global" else groups_of.average(shrunk + mean)
        updated = torch.where(target, estimate, x)
        change = float((updated - x)[:, fill].square().mean().sqrt())
        x = updated
        history.append((step + 1, change))
        if callback is not None:
            callback(Progress(step + 1, s.iters, change, delta))
    return x, SolveResult(s.iters, change, False, time.perf_counter() - began, history)


class _PatchGroupTerm:
    """``sum_g R(centred group g)``, with groups re-found every ``regroup_every`` calls."""

    def __init__(self, reg: LowRankRegularizer, settings: InpaintSettings, select: Tensor) -> None:
        self.reg, self.settings, self.select = reg, settings, select
        self.index: Tensor | None = None
        self.calls = 0

    def __call__(self, x: Tensor) -> Tensor:
        s = self.settings
        if self.index is None or self.calls % s.regroup_every == 0:
            with torch.no_grad():
                self.index = group_indices(
                    x.detach(), patch=s.patch, group=s.group, stride=s.stride, window=s.window, select=self.select
                )
        self.calls += 1
        rows = all_patches(x, s.patch)[self.index]  # (G, K, D)
        return self.reg(rows - rows.mean(dim=1, keepdim=True))
