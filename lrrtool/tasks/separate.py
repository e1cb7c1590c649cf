r"""Background/foreground separation of a video, robust-PCA style.

With frames as columns (:class:`lrrtool.priors.FramesAsColumns`),
:math:`V \in \mathbb{R}^{D \times T}` (``D`` = pixels x channels),

.. math:: \min_X \; \|V - X\|_1 + \lambda'\, R(X)

``X`` is the low-rank background and ``V - X`` the sparse foreground: the forward model
is :class:`lrrtool.forward.SparseNoise`. The Gram matrix is only ``T x T``, so exact
spectra are cheap. Two solvers:

- ``threshold`` (default): :func:`lrrtool.solvers.robust_pca`, the inexact augmented
  Lagrangian method whose singular-value step is the prior's prox (``reg=nuclear`` is
  exactly PCP; other penalties reweight it, as IRNN does). The sparsity weight is robust
  PCA's :math:`w = 1/\sqrt{\max(D, T)}`, scaled by ``lam``.
- ``adam``: the EDLRR paper's route, :func:`lrrtool.solvers.adam` on
  :math:`\frac{1}{DT}\|V - X\|_1 + \lambda R(X)` with any estimator
  (:func:`default_lambda` is the same robust-PCA balance).

Solve small, lift to full size (:func:`separate_lifted`, the default): the model is
solved on block means of about ``work_pixels`` pixels per frame; the background's
temporal components ``B`` ``(T, r)`` found there are fitted to every full-size pixel's
time series in the L1 sense (:func:`robust_fit`), so the background of frame ``t`` is
``B[t] @ C`` with ``r`` coefficients per value, made on demand. Measured (bench): on a
320x180 clip the lift loses 0.004 F-measure against the same fit at full size, and both
beat robust PCA alone (0.93 against 0.76), whose low-rank part absorbs noise. The mask
(:func:`residual_mask`) is a hysteresis rule with the noise level per frame and region.

Long videos are solved chunk by chunk (:func:`separate_chunks`); ``memory`` (background
frames of the previous chunk) is appended as extra columns, so the background carries
across chunks, and the chunk size follows a memory budget (:func:`chunk_frames_for`).
Each chunk also solves the next chunk's first frames (a look-ahead, not written), and the
next chunk's background fades from that solve to its own over them (:func:`fade_weights`):
two solves of one frame differ by 0.5-0.9/255 on average (measured on a planted 640x360
clip in chunks of 100), a step 7-12 times the background's frame-to-frame change, which
the fade spreads over ``BLEND_FRAMES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.forward import SparseNoise
from lrrtool.priors import FramesAsColumns, LowRankPrior
from lrrtool.solvers import PIXEL_BOUNDS, Callback, SolveResult, adam, robust_pca
from lrrtool.tasks.budget import RUNTIME_GIB
from lrrtool.tasks.settings import TaskSettings

#: Copies of the ``D x T`` chunk each solver holds at once (for chunk sizing).
WORKING_COPIES = {"threshold": 6, "adam": 7}
#: Background frames carried from one chunk to the next.
MEMORY_FRAMES = 10
#: Frames larger than this (pixels) are solved on a working copy of about this size
#: and lifted to full size (:func:`separate_lifted`): 128x72 for 16:9 frames.
WORK_PIXELS = 128 * 72
#: Frames solved at once when neither the user nor the memory budget asks for fewer.
DEFAULT_CHUNK_FRAMES = 200
#: Frames of the next chunk each chunk also solves, over which the next one fades in.
BLEND_FRAMES = 16


def blend_frames(chunk_frames: int) -> int:
    """The look-ahead of chunks of ``chunk_frames``: ``BLEND_FRAMES``, or half a chunk
    when that is less."""
    return min(BLEND_FRAMES, chunk_frames // 2)


def fade_weights(frames: int, like: Tensor) -> Tensor:
    r"""The weights :math:`a_t = (t + 1) / (L + 1)`, ``t < L = frames``, of a chunk's own
    solve in the background of its first ``L`` frames, :math:`a_t X_t + (1 - a_t) X'_t`
    with :math:`X'` the previous chunk's solve of them: a linear fade, whose largest
    frame-to-frame step, :math:`\|X - X'\| / (L + 1)`, is the least of any fade over
    ``L`` frames. ``(L,)`` of ``like``'s dtype and device."""
    return torch.arange(1, frames + 1, dtype=like.dtype, device=like.device) / (frames + 1)


@dataclass(frozen=True)
class SeparateSettings(TaskSettings):
    """``lam``: None = robust PCA's balance (see the module docstring); for ``threshold``
    a number multiplies that default, for ``adam`` it is the weight itself. ``iters``
    None: 100 (threshold, stops earlier at relative residual ``tol``) or 300 (adam).
    ``threshold`` and ``grow`` set the foreground mask (:func:`foreground_mask`).
    ``work_pixels``: frames with more pixels are solved on a working copy of about that
    many pixels and lifted to full size (:func:`separate_lifted`); 0 solves at full size
    by robust PCA alone. ``components``: the most temporal components of the background
    (0: as many as the solve finds, :func:`temporal_components`); 1 keeps one still scene
    under changing light, so an object that stops stays foreground while it covers less
    than half of a chunk."""

    solver: str | None = None
    tol: float | None = None
    threshold: float = 4.0
    grow: float = 2.5
    work_pixels: int = WORK_PIXELS
    components: int = 0

    defaults: ClassVar[dict[str, dict[str, object]]] = {
        "threshold": {"solver": "threshold", "reg": "nuclear", "iters": 100, "tol": 1e-5},
        "adam": {"solver": "adam", "reg": "nuclear", "iters": 300, "lr": 0.01, "estimator": "auto"},
    }
    applies_to: ClassVar[dict[str, tuple[str, ...]]] = {
        "tol": ("threshold",),
        **dict.fromkeys(("lr", "estimator"), ("adam",)),
    }
    nonnegative: ClassVar[tuple[str, ...]] = ("tol", "threshold", "grow", "work_pixels", "components")

    def check(self, s: dict[str, object]) -> None:
        super().check(s)
        if s["lam"] is not None and not s["lam"] > 0:
            raise LRRError(f"lam must be > 0, got {s['lam']}", parameter="lam")
        if s["components"] and not s["work_pixels"]:
            raise LRRError("components sets the per-pixel fit, which work_pixels 0 turns off", parameter="components")


def default_lambda(pixels: int, frames: int) -> float:
    """Robust PCA's ``||L||_* + ||S||_1 / sqrt(max(D, T))`` (Candès et al. 2011) rewritten for
    the mean-normalised L1 term: ``lam = sqrt(max(D, T)) / (D T)``."""
    return math.sqrt(max(pixels, frames)) / (pixels * frames)


def separate(
    frames: Tensor,
    settings: SeparateSettings = SeparateSettings(),
    *,
    memory: Tensor | None = None,
    fade: Tensor | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, Tensor, Tensor, SolveResult]:
    """Split ``frames`` ``(T, C, H, W)`` in ``[0, 1]`` into background, foreground, mask.

    Args:
        frames: the video chunk.
        settings: see :class:`SeparateSettings`.
        memory: optional ``(M, C, H, W)`` background frames of the previous chunk, solved
            with the chunk as extra columns (not returned).
        fade: optional ``(L, C, H, W)``, ``L <= T``: another solve's background of the
            first ``L`` frames, which the background fades from (:func:`fade_weights`).
        callback: solver progress.

    Returns:
        ``(background (T,C,H,W), foreground (T,C,H,W) = frames - background, mask (T,H,W)
        bool (see :func:`foreground_mask`), result)``.
    """
    s = settings.resolved()
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise LRRError(f"need frames of shape (T, C, H, W), got {tuple(frames.shape)}")
    T = frames.shape[0]
    X, result = _solve(frames if memory is None else torch.cat([frames, memory.to(frames)]), s, callback)
    with torch.no_grad():
        bg = X[:T].clamp(0, 1)
        if fade is not None:
            L = fade.shape[0]
            if L > T:
                raise LRRError(f"a fade over {L} frames needs a chunk of at least {L}, got {T}")
            bg[:L].lerp_(fade.to(bg), 1 - fade_weights(L, bg).view(-1, 1, 1, 1))
        fg = frames - bg
        mask = foreground_mask(fg, s.threshold, s.grow)
    return bg, fg, mask, result


def _solve(stack: Tensor, s: SeparateSettings, callback: Callback | None) -> tuple[Tensor, SolveResult]:
    """The low-rank part ``X`` ``(T, C, H, W)`` of ``stack`` under resolved settings ``s``."""
    if stack.shape[0] < 2:
        raise LRRError("one frame cannot be separated: a background needs at least 2 frames")
    forward = SparseNoise(stack)
    prior = LowRankPrior(s.regularizer(), FramesAsColumns())
    D, columns = prior.lift.matrix_shape(stack)
    if s.solver == "threshold":
        weight = (s.lam or 1.0) / math.sqrt(max(D, columns))
        return robust_pca(forward, prior, weight=weight, iters=s.iters, tol=s.tol, callback=callback)
    lam = default_lambda(D, columns) if s.lam is None else s.lam
    start = stack.median(dim=0, keepdim=True).values.expand_as(stack)
    return adam(
        lambda x: forward.value(x) / (D * columns) + lam * prior.value(x), start, iters=s.iters, lr=s.lr,
        bounds=PIXEL_BOUNDS, callback=callback,
    )  # fmt: skip


def foreground_mask(foreground: Tensor, threshold: float = 4.0, grow: float = 2.5, steps: int = 10) -> Tensor:
    """Binary mask ``(T, H, W)`` of a sparse part ``(T, C, H, W)``: :func:`residual_mask`
    of ``|foreground|`` maximised over channels."""
    return residual_mask(foreground.abs().amax(dim=1), threshold, grow, steps)


def residual_mask(
    residual: Tensor | Iterable[Tensor],
    threshold: float = 4.0,
    grow: float = 2.5,
    steps: int = 10,
    *,
    levels: Tensor | None = None,
    out: Tensor | None = None,
) -> Tensor:
    r"""Binary mask ``(T, H, W)`` of a residual magnitude ``r`` ``(T, H, W)`` (or of its
    successive batches of frames) by hysteresis.

    The noise level :math:`\hat s` is estimated per frame and per region
    (:func:`noise_levels`), so a frame or an area with more noise (a compressed key frame,
    foliage) does not flood the mask, while an object that fills a region for a while
    does not hide itself. Pixels with ``r > threshold * s`` (and > 2/255) are seeds; the
    mask then grows ``steps`` times into 8-neighbours with ``r > grow * s`` (and > 1/255),
    as Canny's edge hysteresis does. The two thresholds are set per region and
    interpolated bilinearly over the frame. Runs a batch of frames at a time, so its
    temporaries stay a few frames large. Batches need ``levels`` ``(T, ny, nx)`` for the
    whole chunk (:func:`noise_levels` of a sample, :func:`sampled_noise_levels`); ``out``
    ``(T, H, W)`` bool receives the mask (no second copy while joining them).
    """
    if isinstance(residual, Tensor):
        levels = noise_levels(residual) if levels is None else levels
        residual = residual.split(MASK_BATCH)
    elif levels is None:
        raise LRRError("residual_mask: batches of a residual need the chunk's noise levels")
    masks, filled = [], 0
    for batch in residual:
        batch = batch.float()
        level = levels[filled : filled + batch.shape[0]].to(batch)
        mask = batch > _spread(torch.clamp(threshold * level, min=2 / 255), batch.shape)
        candidates = batch > _spread(torch.clamp(grow * level, min=1 / 255), batch.shape)
        for _ in range(steps):
            mask = _dilate(mask) & candidates
        if out is None:
            masks.append(mask)
        else:
            out[filled : filled + mask.shape[0]] = mask
        filled += mask.shape[0]
    return torch.cat(masks) if out is None else out[:filled]


def _dilate(mask: Tensor) -> Tensor:
    """Boolean 3x3 dilation of ``(..., H, W)`` (a pixel joins when any 8-neighbour is set):
    a horizontal then a vertical OR of shifted slices, ~30x quicker than a float
    ``max_pool2d`` on the CPU."""
    wide = mask.clone()
    wide[..., 1:] |= mask[..., :-1]
    wide[..., :-1] |= mask[..., 1:]
    grown = wide.clone()
    grown[..., 1:, :] |= wide[..., :-1, :]
    grown[..., :-1, :] |= wide[..., 1:, :]
    return grown


#: Frames the mask rule handles at once.
MASK_BATCH = 8
#: Side of the square regions the noise level is estimated on, as a fraction of the
#: frame's shorter side (and at least ``NOISE_CELL_MIN`` pixels), and the pixels per
#: side of the subsample it is estimated from.
NOISE_CELL_FRACTION = 1 / 6
NOISE_CELL_MIN = 32
NOISE_CELL_SAMPLE = 32
#: A region's noise level is at most this multiple of its frame's, and of its own
#: median over the chunk scaled by its frame's rise (or its frame's level, when that is
#: more): a large foreground object that fills a region would otherwise hide itself.
NOISE_CELL_CAP = 2.0


def noise_map(residual: Tensor) -> Tensor:
    """Robust noise level ``(T, H, W)`` of a residual magnitude ``(T, H, W)``:
    :func:`noise_levels` spread over the frame."""
    return _spread(noise_levels(residual), residual.shape)


def noise_stride(height: int, width: int) -> int:
    """The subsampling step of the noise estimate for ``height x width`` frames: a
    region's level is taken from about ``NOISE_CELL_SAMPLE`` squared of its pixels."""
    return max(1, _noise_cell(height, width) // NOISE_CELL_SAMPLE)


def _noise_cell(height: int, width: int) -> int:
    return max(NOISE_CELL_MIN, round(min(height, width) * NOISE_CELL_FRACTION))


def noise_levels(residual: Tensor) -> Tensor:
    """Noise levels ``(T, ny, nx)`` of a whole chunk's residual magnitude ``(T, H, W)``:
    :func:`sampled_noise_levels` of its :func:`noise_stride` subsample."""
    H, W = residual.shape[1:]
    step = noise_stride(H, W)
    return sampled_noise_levels(residual[:, ::step, ::step], H, W)


def sampled_noise_levels(sample: Tensor, height: int, width: int) -> Tensor:
    r"""Robust noise levels of a chunk from ``sample`` ``(T, h, w)``, the residual
    magnitude of ``height x width`` frames at every :func:`noise_stride`-th row and
    column: ``(T, ny, nx)``, one per frame and square region, or ``(T, 1, 1)`` for frames
    smaller than two regions.

    Per frame ``t`` and region ``c``: :math:`s_{tc} = 1.4826\, \mathrm{median}(r)` over
    the region's sample, capped at
    :math:`\min(\kappa f_t,\ \max(\kappa\, m_c f_t / \bar f,\ f_t))`, with :math:`\kappa` =
    ``NOISE_CELL_CAP``, :math:`f_t` the frame's median over its regions, :math:`\bar f` the
    median of :math:`f_t` over the chunk and :math:`m_c` the region's median over the
    chunk. The first cap holds for an object that fills a few regions of one frame. The
    second holds for one that fills a quiet region (a clear sky) for less than half the
    chunk, even when it raises its frame's level (its flare, the exposure): the region
    may reach its frame's level, not twice that. A frame that is noisier all over (a key
    frame) keeps its level, since :math:`f_t / \bar f` scales the second cap.
    """
    T = sample.shape[0]
    side = _noise_cell(height, width)
    ny, nx = height // side, width // side
    if ny * nx < 2:
        return 1.4826 * sample.reshape(T, -1).median(dim=1).values.view(T, 1, 1)
    cell = side // noise_stride(height, width)  # sampled pixels per region side
    cells = sample[:, : ny * cell, : nx * cell].reshape(T, ny, cell, nx, cell)
    level = 1.4826 * cells.permute(0, 1, 3, 2, 4).reshape(T, ny, nx, -1).median(dim=-1).values
    frame = level.reshape(T, -1).median(dim=1).values.view(T, 1, 1)
    rise = frame / frame.median().clamp(min=1e-12)
    typical = level.median(dim=0).values
    cap = torch.minimum(NOISE_CELL_CAP * frame, torch.maximum(NOISE_CELL_CAP * typical * rise, frame))
    return torch.minimum(level, cap)


def _spread(levels: Tensor, shape: torch.Size) -> Tensor:
    """Per-region values ``(T, ny, nx)`` interpolated bilinearly over frames ``(T, H, W)``
    (a view for one value per frame)."""
    if levels.shape[1:] == (1, 1):
        return levels.expand(shape)
    return F.interpolate(levels.unsqueeze(1), size=tuple(shape[1:]), mode="bilinear", align_corners=False).squeeze(1)


#: Temporal components kept from the working solve: singular values above this
#: fraction of the largest, at most ``MAX_COMPONENTS``.
COMPONENT_TOL = 3e-2
MAX_COMPONENTS = 8
#: IRLS steps of the full-size fit and the residual floor below which a value has full
#: weight (a Huber corner, in pixel units).
FIT_STEPS = 8
FIT_FLOOR = 1 / 255
#: Frames (of the chunk and the carried ones, evenly spread) the full-size fit uses.
FIT_FRAMES = 32
#: Frames of the working background, upsampled, that join the full-size fit as extra
#: observations: where a foreground object covers a pixel for half the chunk, they
#: tip its L1 fit to the background, as the full-size solve's coupling does.
PRIOR_FRAMES = 8
#: Their total weight, in frames.
PRIOR_WEIGHT = 2.0
#: Values (frames x pixels x channels) per band of the full-size fit.
FIT_BAND_VALUES = 2**20


def working_factor(height: int, width: int, pixels: int) -> int:
    """The integer factor ``k`` that brings ``height x width`` to at most about ``pixels``
    pixels (``ceil(sqrt(H W / pixels))``); 1 when the frame is no larger, or ``pixels`` is 0."""
    if pixels <= 0 or height * width <= pixels:
        return 1
    return min(math.ceil(math.sqrt(height * width / pixels)), height // 2, width // 2)


def working_size(height: int, width: int, pixels: int) -> tuple[int, int]:
    """``(H // k, W // k)`` for :func:`working_factor` ``k``: the frame's own size when
    it is no larger than ``pixels``, or ``pixels`` is 0."""
    k = working_factor(height, width, pixels)
    return height // k, width // k


def block_mean(frames: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    """Means of ``k x k`` blocks of ``frames`` ``(T, C, H, W)`` (uint8 in ``0..255`` or float
    in ``[0, 1]``): ``(T, C, H // k, W // k)`` of ``dtype`` in ``[0, 1]``; the last ``H mod k``
    rows and ``W mod k`` columns are left out. uint8 frames are summed in integers, a few
    frames at a time (no float copy of the chunk)."""
    C, H, W = frames.shape[1:]
    h, w = H // k, W // k
    if frames.dtype != torch.uint8:
        return F.avg_pool2d(frames[:, :, : h * k, : w * k].to(dtype), k)
    parts = []
    for batch in frames[:, :, : h * k, : w * k].split(MASK_BATCH):
        rows = batch.reshape(-1, C, h, k, w * k).sum(3, dtype=torch.int32 if k > 128 else torch.int16)
        parts.append(rows.reshape(-1, C, h, w, k).sum(-1, dtype=torch.int32).to(dtype) / (255 * k * k))
    return torch.cat(parts)


def temporal_components(low_rank: Tensor, limit: int = 0) -> Tensor:
    r"""Orthonormal temporal basis ``B`` ``(T, r)`` of a low-rank video ``(T, ...)``: the
    left singular vectors of its ``T x D`` matrix (from the ``T x T`` Gram matrix, in
    float64) with :math:`\sigma_i > \text{COMPONENT\_TOL}\,\sigma_1`, at most
    ``MAX_COMPONENTS`` (and at most ``limit`` when it is not 0), largest first. ``r >= 1``."""
    return _components(*_temporal_spectrum(low_rank), limit).to(low_rank.dtype)


def _temporal_spectrum(video: Tensor) -> tuple[Tensor, Tensor]:
    """``eigh`` of the ``T x T`` Gram matrix of ``video`` ``(T, ...)`` as a ``T x D``
    matrix, in float64: energies ``sigma_i^2`` ascending and the temporal vectors."""
    M = video.reshape(video.shape[0], -1).double()
    return torch.linalg.eigh(M @ M.T)


def _components(energies: Tensor, vectors: Tensor, limit: int) -> Tensor:
    """The columns of ``vectors`` that :func:`temporal_components` keeps, largest first."""
    kept = int((energies > COMPONENT_TOL**2 * energies[-1].clamp_min(torch.finfo(energies.dtype).tiny)).sum())
    kept = min(max(kept, 1), MAX_COMPONENTS, limit or MAX_COMPONENTS)
    return vectors[:, -kept:].flip(-1)


def robust_fit(
    values: Tensor,
    basis: Tensor,
    steps: int = FIT_STEPS,
    floor: float = FIT_FLOOR,
    row_weights: Tensor | None = None,
) -> Tensor:
    r"""Each column of ``values`` ``(S, P)`` (a pixel's time series) fitted to the temporal
    ``basis`` ``(S, r)`` in the L1 sense: returns the coefficients ``C`` ``(r, P)`` with
    :math:`c_p \approx \arg\min_c \sum_t a_t |v_{tp} - b_t^\top c|` (``a`` = ``row_weights``
    ``(S,)``, default all 1).

    Iteratively reweighted least squares from the least-squares fit: weights
    :math:`w_{tp} = 1/\max(|v_{tp} - b_t^\top c_p|, \text{floor})` (so this is a Huber fit
    with corner ``floor``), then per pixel the ``r x r`` normal equations
    :math:`(\sum_t w_{tp} b_t b_t^\top) c_p = \sum_t w_{tp} v_{tp} b_t`, solved batched
    (one division for ``r = 1``). Cost ``O(steps S P r^2)``.
    """
    S, r = basis.shape
    ridge = 1e-6 * torch.eye(r, dtype=values.dtype, device=values.device)
    coefficients = torch.linalg.solve(basis.T @ basis + ridge, basis.T @ values)
    outer = (basis[:, :, None] * basis[:, None, :]).reshape(S, r * r).T
    for _ in range(steps):
        weights = subtract_combination(values.clone(), basis, coefficients).abs_().clamp_min_(floor).reciprocal_()
        if row_weights is not None:
            weights.mul_(row_weights[:, None])
        right = basis.T @ (weights * values)
        if r == 1:
            coefficients = right / (outer @ weights)
        else:
            normal = (outer @ weights).T.reshape(-1, r, r) + ridge
            coefficients = torch.linalg.solve(normal, right.T).T
    return coefficients


def combine(basis: Tensor, coefficients: Tensor) -> Tensor:
    """``basis @ coefficients`` for ``basis`` ``(S, r)`` and ``coefficients`` ``(r, ...)``:
    ``(S, ...)``, as one multiply-add per component. A GEMM with inner size ``r`` is
    memory-bound on the CPU (r = 1, 40 x 207,360, with the subtraction: 5.7 ms as a
    matmul, 1.7 ms as an ``addcmul``)."""
    shape = (-1,) + (1,) * (coefficients.ndim - 1)
    result = basis[:, 0].reshape(shape) * coefficients[0]
    for k in range(1, basis.shape[1]):
        result.addcmul_(basis[:, k].reshape(shape), coefficients[k])
    return result


def subtract_combination(values: Tensor, basis: Tensor, coefficients: Tensor) -> Tensor:
    """``values - basis @ coefficients``, in place in ``values`` (see :func:`combine`)."""
    shape = (-1,) + (1,) * (coefficients.ndim - 1)
    for k in range(basis.shape[1]):
        values.addcmul_(basis[:, k].reshape(shape), coefficients[k], value=-1)
    return values


@dataclass
class LiftedSolve:
    """The working solve lifted to full size: the background of frame ``t`` is
    ``basis[t] @ coefficients``, in units of ``levels`` (255 for uint8 input, 1 for
    float). ``basis`` ``(T + M, r)``: the temporal components over the chunk and the
    carried frames; ``coefficients`` ``(r, C, H, W)`` float32, one set per full-size
    pixel; ``low_rank`` ``(T + M, C, h, w)``: the working solve's background; ``result``:
    its solve; ``spread``: :func:`temporal_spread` of ``low_rank``. Nothing frame-sized
    is stored: backgrounds and residuals are made on demand, a few frames at a time.

    ``fade``: ``(rows, coefficients)`` of another fit of the first ``L = len(rows)``
    frames (``rows`` ``(L, r')``, ``coefficients`` ``(r', C, H, W)``), set by
    :meth:`fade_from`: the background of frame ``t < L`` is then
    ``a_t basis[t] @ C + (1 - a_t) rows[t] @ C'`` (:func:`fade_weights`)."""

    basis: Tensor
    coefficients: Tensor
    levels: float
    low_rank: Tensor
    result: SolveResult
    spread: float
    fade: tuple[Tensor, Tensor] | None = None

    @property
    def components(self) -> int:
        return self.basis.shape[1]

    def fade_from(self, rows: Tensor, coefficients: Tensor) -> None:
        """Fade the first ``len(rows)`` frames in from the fit ``rows @ coefficients`` (the
        previous chunk's, :meth:`handover`): both terms of the fade are fits, so the
        background stays ``basis @ C`` with the weights folded into the rows."""
        L = rows.shape[0]
        if self.basis.shape[0] < L:
            raise LRRError(f"a fade over {L} frames needs a chunk of at least {L}, got {self.basis.shape[0]}")
        weights = fade_weights(L, self.basis)[:, None]
        self.basis = self.basis.clone()
        self.basis[:L] *= weights
        self.fade = ((1 - weights) * rows.to(self.basis), coefficients)

    def handover(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """``(rows, coefficients)`` of frames ``start:stop`` for the next chunk's
        :meth:`fade_from`; frames past this one's own fade."""
        if self.fade is not None and start < self.fade[0].shape[0]:
            raise LRRError("a chunk's look-ahead must start after its own fade")
        return self.basis[start:stop], self.coefficients

    def background(self, start: int, stop: int) -> Tensor:
        """uint8 ``(stop - start, C, H, W)``: the background of frames ``start:stop``, made
        a frame at a time (one float frame of temporaries)."""
        out = torch.empty(stop - start, *self.coefficients.shape[1:], dtype=torch.uint8, device=self.basis.device)
        for t in range(start, stop):
            fitted = self.fit(t, t + 1)
            out[t - start] = fitted[0].clamp_(0, self.levels).mul_(255 / self.levels).round_()
        return out

    def fit(self, start: int, stop: int) -> Tensor:
        """The unquantised background of frames ``start:stop`` in units of ``levels``."""
        background = combine(self.basis[start:stop], self.coefficients)
        return self._subtract_fade(background, start, stop, sign=-1)

    def _subtract_fade(self, values: Tensor, start: int, stop: int, step: int = 1, sign: int = 1) -> Tensor:
        """``values`` (frames ``start:stop``, every ``step``-th row and column) minus
        ``sign`` times the faded-out fit's part, in place."""
        if self.fade is None or start >= self.fade[0].shape[0]:
            return values
        rows, coefficients = self.fade
        end = min(stop, rows.shape[0])
        subtract_combination(values[: end - start], sign * rows[start:end], coefficients[:, :, ::step, ::step])
        return values

    def residuals(self, frames: Tensor, batch: int = 0, step: int = 1) -> Iterator[Tensor]:
        """``|frame - background|`` maxed over channels, ``(b, H, W)`` float in ``[0, 1]``
        units, for successive batches of ``batch`` (default ``MASK_BATCH``) of the chunk's
        ``frames``; with ``step``, at every ``step``-th row and column only."""
        size = batch or MASK_BATCH
        coefficients = self.coefficients if step == 1 else self.coefficients[:, :, ::step, ::step].contiguous()
        for start in range(0, frames.shape[0], size):
            stop = min(start + size, frames.shape[0])
            difference = frames[start:stop, :, ::step, ::step].to(coefficients.dtype, copy=True)  # changed in place
            subtract_combination(difference, self.basis[start:stop], coefficients)
            self._subtract_fade(difference, start, stop, step)
            yield difference.abs_().amax(dim=1).div_(self.levels)

    def noise_levels(self, frames: Tensor) -> Tensor:
        """:func:`sampled_noise_levels` ``(T, ny, nx)`` of the chunk's ``frames``, from
        residuals made at the :func:`noise_stride` subsample only."""
        H, W = frames.shape[2:]
        sample = torch.cat(list(self.residuals(frames, step=noise_stride(H, W))))
        return sampled_noise_levels(sample, H, W)


def separate_lifted(
    frames: Tensor,
    settings: SeparateSettings,
    *,
    memory: Tensor | None = None,
    memory_full: Tensor | None = None,
    callback: Callback | None = None,
) -> LiftedSolve:
    r"""Solve small, lift to full size (compressed robust PCA).

    1. ``frames`` ``(T, C, H, W)`` (uint8, or float in ``[0, 1]``) are block-averaged to
       :func:`working_size` (:func:`block_mean`) and solved as :func:`separate` does, with
       ``memory`` ``(M, C, h, w)`` (working-size background of the previous chunk) as
       extra columns.
    2. The working background's temporal components ``B`` ``(T + M, r)``
       (:func:`temporal_components`) carry its lighting changes.
    3. Every full-size pixel's time series is fitted to ``B`` in the L1 sense
       (:func:`robust_fit`), in bands of rows, on ``FIT_FRAMES`` frames spread over the
       chunk and ``memory_full`` ``(M, C, H, W)`` uint8 (the previous chunk's full-size
       background at the carried frames), plus ``PRIOR_FRAMES`` frames of the working
       background upsampled, at a total weight of ``PRIOR_WEIGHT`` frames.

    Cost: the working solve, plus ``O(FIT_STEPS (FIT_FRAMES + PRIOR_FRAMES) C H W r^2)``
    for the fit. Held besides ``frames``: the coefficients (``r`` floats per value), the
    upsampled prior frames (uint8) and one band's temporaries (``FIT_BAND_VALUES`` values
    each).
    """
    s = settings.resolved()
    T, C, H, W = frames.shape
    levels = 255.0 if frames.dtype == torch.uint8 else 1.0  # the fit runs in the input's units
    work_dtype = memory.dtype if memory is not None else torch.float32
    small = block_mean(frames, working_factor(H, W, s.work_pixels), work_dtype)
    if memory is not None:
        small = torch.cat([small, memory.to(small)])
    low_rank, result = _solve(small, s, callback)
    energies, vectors = _temporal_spectrum(low_rank)  # one eigh for the basis and the spread
    basis = _components(energies, vectors, s.components).to(work_dtype)
    M = 0 if memory_full is None else memory_full.shape[0]
    if small.shape[0] - T != M:
        raise LRRError(f"memory_full has {M} frames but memory has {small.shape[0] - T}")
    sample = torch.linspace(0, T + M - 1, min(FIT_FRAMES, T + M)).round().long().unique().to(basis.device)
    sample_frames, sample_memory = sample[sample < T], sample[sample >= T] - T
    prior_rows = torch.linspace(0, T - 1, min(PRIOR_FRAMES, T)).round().long().unique().to(basis.device)
    prior = F.interpolate(low_rank[prior_rows].to(work_dtype), size=(H, W), mode="bilinear", align_corners=False)
    prior = prior.clamp_(0, 1).mul_(255).round_().to(torch.uint8)  # a quarter of the memory
    fit_basis = torch.cat([basis[sample], basis[prior_rows]])
    row_weights = torch.ones(len(fit_basis), dtype=work_dtype, device=basis.device)
    row_weights[len(sample) :] = PRIOR_WEIGHT / len(prior_rows)
    coefficients = torch.empty(basis.shape[1], C, H, W, dtype=work_dtype, device=frames.device)
    rows = max(1, FIT_BAND_VALUES // (len(fit_basis) * C * W))
    for top in range(0, H, rows):
        band = slice(top, min(top + rows, H))
        fitted = [frames[sample_frames, :, band].to(work_dtype)]  # in the order of fit_basis
        if len(sample_memory):
            fitted.append(memory_full[sample_memory, :, band].to(work_dtype) * (levels / 255))
        fitted.append(prior[:, :, band].to(work_dtype) * (levels / 255))
        values = torch.cat(fitted).reshape(len(fit_basis), -1)
        fit = robust_fit(values, fit_basis, floor=FIT_FLOOR * levels, row_weights=row_weights)
        coefficients[:, :, band] = fit.reshape(-1, C, band.stop - top, W)
    return LiftedSolve(basis, coefficients, levels, low_rank, result, _energy_spread(energies))


def chunk_frames_for(
    frame_shape: tuple[int, int, int],
    dtype: torch.dtype,
    settings: SeparateSettings,
    *,
    memory_gib: float,
    chunk_frames: int | None = None,
    staged_frames: int = 0,
) -> int:
    """Frames per chunk for frames ``(C, H, W)`` of ``dtype``: ``chunk_frames`` (default
    200) or fewer, so that what a chunk holds, with its look-ahead (:func:`blend_frames`),
    stays within ``memory_gib``, besides ``staged_frames`` uint8 frames that the caller's
    decoder holds.

    ``work_pixels`` 0 (robust PCA on the frames themselves): the solver's working copies
    of the chunk and the carried frames. Otherwise (:func:`separate_lifted`): per frame
    the uint8 frame, its mask and the working solve's copies; fixed: the coefficients,
    the fit's band temporaries, the carried and prior frames, and a batch of the mask
    rule and of the output. Both: the fade carried from the previous chunk (its
    look-ahead's background, or a second set of coefficients). ``RUNTIME_GIB`` of the
    budget is left to the process itself."""
    C, H, W = frame_shape
    s = settings.resolved()
    h, w = working_size(H, W, s.work_pixels)
    bytes_per_value = torch.finfo(dtype).bits // 8
    copies = WORKING_COPIES[settings.choice]
    if s.work_pixels == 0:
        per_frame, fixed = C * H * W * bytes_per_value * copies, BLEND_FRAMES * C * H * W * bytes_per_value
    else:
        per_frame = C * H * W + H * W + C * h * w * bytes_per_value * copies
        fixed = FIT_BAND_VALUES * bytes_per_value * LIFT_BAND_COPIES + (MEMORY_FRAMES + PRIOR_FRAMES) * C * H * W
        fixed += 2 * MAX_COMPONENTS * C * H * W * bytes_per_value  # the coefficients, and the fade's
        fixed += MASK_BATCH * max(MASK_COPIES * H * W * bytes_per_value, OUTPUT_COPIES * C * H * W)  # not at once
    fixed += staged_frames * C * H * W
    held = int(((memory_gib - RUNTIME_GIB) * 2**30 - fixed) // per_frame) - MEMORY_FRAMES  # chunk + look-ahead
    if held < 3:
        raise LRRError(
            f"memory_gib {memory_gib} does not hold frames of {W}x{H}: use --scale/--size, --grey or a larger budget",
            parameter="memory_gib",
        )
    frames = held
    while frames + blend_frames(frames) > held:  # the longest chunk whose look-ahead fits too
        frames -= 1
    return min(chunk_frames or DEFAULT_CHUNK_FRAMES, frames)


#: Frame-sized float temporaries per frame of a batch of the mask rule.
MASK_COPIES = 4
#: uint8 copies of a frame while a batch is written (background, foreground view, the
#: writers' layout).
OUTPUT_COPIES = 5
#: Band-sized temporaries :func:`robust_fit` and :func:`separate_lifted` hold at once.
LIFT_BAND_COPIES = 7
#: A frame whose mask covers more than this fraction is counted as poorly fitted.
POOR_FIT_FRACTION = 0.5
#: A chunk whose background has more than this fraction of its energy outside its main
#: temporal component is not one still scene (measured: static real clips 3e-5 to 6e-4,
#: a 4 px/frame pan 0.030, a scene cut 0.047; a global dimming is exactly rank one).
POOR_FIT_SPREAD = 0.01


def temporal_spread(low_rank: Tensor) -> float:
    r"""``1 - sigma_1^2 / sum_i sigma_i^2`` of a background ``(T, ...)`` as a ``T x D`` matrix:
    0 for a still scene under any global lighting, larger when the background moves."""
    return _energy_spread(_temporal_spectrum(low_rank)[0])


def _energy_spread(energies: Tensor) -> float:
    """:func:`temporal_spread` from the energies ``sigma_i^2`` in ascending order."""
    energies = energies.clamp_min(0)
    return float(1 - energies[-1] / energies.sum().clamp_min(torch.finfo(energies.dtype).tiny))


@dataclass
class SeparatedChunk:
    """One solved chunk: the input ``frames`` ``(T, C, H, W)``, its ``mask`` ``(T, H, W)``,
    the solve's ``result``, ``spread``: :func:`temporal_spread` of the solved background
    (above ``POOR_FIT_SPREAD``: not one still scene), and the background: ``solved``
    (float ``(T, C, H, W)``, plain robust PCA) or ``lifted`` (made on demand from the
    per-pixel fit, uint8); see :meth:`background_frames`."""

    index: int
    frames: Tensor
    mask: Tensor
    result: SolveResult
    spread: float = 0.0
    solved: Tensor | None = None
    lifted: LiftedSolve | None = None

    @property
    def components(self) -> int | None:
        """Temporal components of a lifted background (None for plain robust PCA)."""
        return None if self.lifted is None else self.lifted.components

    @property
    def poor_fit(self) -> bool:
        return self.spread > POOR_FIT_SPREAD

    def background_frames(self, start: int = 0, stop: int | None = None) -> Tensor:
        """The background of frames ``start:stop``: float in ``[0, 1]`` (plain robust
        PCA) or uint8 (lifted)."""
        stop = self.mask.shape[0] if stop is None else min(stop, self.mask.shape[0])
        if self.lifted is not None:
            return self.lifted.background(start, stop)
        return self.solved[start:stop]

    @property
    def background(self) -> Tensor:
        """The whole chunk's background (a frame-sized copy of the chunk when lifted)."""
        return self.background_frames()

    @property
    def frame_coverage(self) -> Tensor:
        """The share of each frame the mask covers, ``(T,)`` float64; counted a few frames at
        a time (a count over the whole mask makes an int64 copy of it, 0.9 GB at 1080p)."""
        counts = [torch.count_nonzero(batch.flatten(1), dim=1) for batch in self.mask.split(MASK_BATCH)]
        return torch.cat(counts).double() / max(self.mask[0].numel(), 1)

    @property
    def foreground_fraction(self) -> float:
        return float(self.frame_coverage.mean())

    @property
    def poor_frames(self) -> list[int]:
        """Frames (within the chunk) whose mask covers more than ``POOR_FIT_FRACTION``:
        the low-rank background does not explain them (a moving camera, a scene cut)."""
        return torch.nonzero(self.frame_coverage > POOR_FIT_FRACTION).flatten().tolist()

    def foreground(self, start: int = 0, stop: int | None = None) -> Tensor:
        """``frames - background`` in ``[-1, 1]`` (float32) for frames ``start:stop``."""
        return _unit(self.frames[start:stop]) - _unit(self.background_frames(start, stop))

    def foreground_view(
        self, start: int = 0, stop: int | None = None, gain: int = 4, background: Tensor | None = None
    ) -> Tensor:
        """``|frames - background| * gain``, clamped to ``[0, 1]``, for frames ``start:stop``:
        uint8, in integers, when both are uint8 (no float copy), else float. ``background``:
        those frames' background when the caller has made it already."""
        frames = self.frames[start:stop]
        if background is None:
            background = self.background_frames(start, stop)
        if frames.dtype == background.dtype == torch.uint8:
            difference = torch.maximum(frames, background) - torch.minimum(frames, background)
            return difference.clamp_(max=255 // gain).mul_(gain)
        return (_unit(frames) - _unit(background)).abs_().mul_(gain).clamp_(0, 1)


def _unit(x: Tensor) -> Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x


def separate_chunks(
    chunks: Iterable[Tensor | tuple[Tensor, int]],
    settings: SeparateSettings = SeparateSettings(),
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int], AbstractContextManager[Callback | None]] | None = None,
    carry_only: int = 0,
) -> Iterator[SeparatedChunk]:
    """Separate a stream of chunks ``(T, C, H, W)`` (uint8 or float in ``[0, 1]``) one at
    a time, carrying ``MEMORY_FRAMES`` background frames of each chunk into the next: only
    one chunk (plus the carried frames) is held at once. Frames larger than
    ``settings.work_pixels`` are solved small and lifted (:func:`separate_lifted`).
    ``progress(index)`` gives a context manager around each chunk's solve that yields
    its callback.

    A chunk given as ``(frames, written)`` has its own frames ``frames[:written]`` and a
    look-ahead ``frames[written:]``: the next chunk's first frames (or frames after the
    part wanted), solved for the fade and not returned; the next chunk's background fades
    from this solve to its own over them (:func:`fade_weights`), so a chunk border shows
    no step. A plain tensor is all its own frames.

    The first ``carry_only`` chunks (a warm-up) are solved for what they carry into the
    next only: no mask is made for them and they are not yielded."""
    memory = memory_full = fade = None
    index = -1
    for item in chunks:  # not enumerate(): its cached result tuple would hold the last chunk
        index += 1
        chunk, written = item if isinstance(item, tuple) else (item, item.shape[0])
        del item
        with progress(index) if progress is not None else nullcontext() as callback:
            part, memory, memory_full, fade = _separate_chunk(
                index, chunk, written, settings, memory, memory_full, fade, device=device, dtype=dtype,
                callback=callback, masked=index >= carry_only,
            )  # fmt: skip
        del chunk
        if index >= carry_only:
            yield part
        del part  # only the carried frames outlive a chunk: it goes before the next is decoded


def _separate_chunk(
    index: int,
    chunk: Tensor,
    written: int,
    settings: SeparateSettings,
    memory: Tensor | None,
    memory_full: Tensor | None,
    fade: Tensor | tuple[Tensor, Tensor] | None,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    callback: Callback | None,
    masked: bool = True,
) -> tuple[SeparatedChunk | None, Tensor, Tensor | None, Tensor | tuple[Tensor, Tensor] | None]:
    """One chunk of :func:`separate_chunks`: the solved chunk (its first ``written``
    frames; None when not ``masked`` and lifted: a warm-up chunk needs no mask), the
    working-size and full-size background frames it carries into the next, and the fade
    it hands over: the background of its look-ahead (robust PCA) or its fit there
    (``(rows, coefficients)``, lifted); None without a look-ahead."""
    s = settings.resolved()
    T = chunk.shape[0]
    if not 1 <= written <= T:
        raise LRRError(f"a chunk of {T} frames cannot have {written} of its own")
    rows = torch.linspace(0, written - 1, MEMORY_FRAMES).round().long().unique()
    if s.work_pixels == 0:
        frames = _unit(chunk.to(device)).to(dtype)
        bg, _, mask, result = separate(frames, settings, memory=memory, fade=fade, callback=callback)
        handover = bg[written:].clone() if written < T else None  # not a view that holds the chunk's background
        bg, frames, mask = bg[:written], frames[:written], mask[:written]
        part = SeparatedChunk(index, frames, mask, result, spread=temporal_spread(bg), solved=bg)
        return part, bg[rows.to(bg.device)], None, handover
    frames = chunk.to(device)
    lifted = separate_lifted(
        frames if frames.dtype == torch.uint8 else frames.to(dtype),
        settings,
        memory=None if memory is None else memory.to(dtype),
        memory_full=memory_full,
        callback=callback,
    )
    if fade is not None:
        lifted.fade_from(*fade)
    handover = lifted.handover(written, T) if written < T else None
    part = None
    if masked:
        frames = frames[:written]
        mask = torch.empty(written, *frames.shape[2:], dtype=torch.bool, device=frames.device)
        levels = lifted.noise_levels(frames)
        mask = residual_mask(lifted.residuals(frames), s.threshold, s.grow, levels=levels, out=mask)
        part = SeparatedChunk(index, frames, mask, lifted.result, lifted.spread, lifted=lifted)
    rows = rows.to(lifted.low_rank.device)
    carried_full = torch.cat([lifted.background(int(t), int(t) + 1) for t in rows])
    return part, lifted.low_rank[:T][rows].clamp(0, 1), carried_full, handover
