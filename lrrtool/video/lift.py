"""Solve small, lift to full size: temporal components of the working solve fitted to every full-size pixel."""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.solvers import Callback, SolveResult
from lrrtool.video.mask import MASK_BATCH, noise_stride, sampled_noise_levels
from lrrtool.video.objective import SeparateSettings, fade_weights, solve_columns

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
        blocks = batch.reshape(-1, C, h, k, w * k)
        # Row by row into one accumulator: a sum with a wider dtype first copies the whole
        # batch in it (44 MB of 720p frames a batch).
        rows = blocks[:, :, :, 0].to(torch.int32 if k > 128 else torch.int16)
        for i in range(1, k):
            rows += blocks[:, :, :, i]
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
    # The row weights go into the basis's rows rather than into every weight (a pass less).
    weighted = basis if row_weights is None else basis * row_weights[:, None]
    outer = (weighted[:, :, None] * basis[:, None, :]).reshape(S, r * r).T
    for _ in range(steps):
        residual = torch.addcmul(values, basis[:, :1], coefficients[:1], value=-1)
        weights = subtract_combination(residual, basis[:, 1:], coefficients[1:]).abs_().clamp_min_(floor).reciprocal_()
        right = weighted.T @ (weights * values)
        if r == 1:
            coefficients = right / (outer @ weights)
        else:
            normal = (outer @ weights).T.reshape(-1, r, r) + ridge
            coefficients = torch.linalg.solve(normal, right.T).T
    return coefficients


def combine(basis: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
    """``basis @ coefficients`` for ``basis`` ``(S, r)`` and ``coefficients`` ``(r, ...)``:
    ``(S, ...)`` (into ``out`` when given), as one multiply-add per component. A GEMM with
    inner size ``r`` is memory-bound on the CPU (r = 1, 40 x 207,360, with the
    subtraction: 5.7 ms as a matmul, 1.7 ms as an ``addcmul``)."""
    shape = (-1,) + (1,) * (coefficients.ndim - 1)
    result = torch.mul(basis[:, 0].reshape(shape), coefficients[0], out=out)
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
        frame = torch.empty(1, *self.coefficients.shape[1:], dtype=self.coefficients.dtype, device=self.basis.device)
        for t in range(start, stop):
            fitted = self.fit(t, t + 1, out=frame)[0].clamp_(0, self.levels)
            out[t - start] = (fitted if self.levels == 255 else fitted.mul_(255 / self.levels)).round_()
        return out

    def fit(self, start: int, stop: int, out: Tensor | None = None) -> Tensor:
        """The unquantised background of frames ``start:stop`` in units of ``levels`` (into
        ``out`` when given)."""
        background = combine(self.basis[start:stop], self.coefficients, out=out)
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
        # One buffer for every batch: a batch of 720p frames is 88 MB, above glibc's mmap
        # threshold, so a new one each batch was faulted in anew (0.3 s of 120 frames).
        buffer = torch.empty(min(size, frames.shape[0]), *coefficients.shape[1:], dtype=coefficients.dtype,
                             device=coefficients.device)  # fmt: skip
        for start in range(0, frames.shape[0], size):
            stop = min(start + size, frames.shape[0])
            difference = buffer[: stop - start].copy_(frames[start:stop, :, ::step, ::step])  # changed in place
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
    low_rank, result = solve_columns(small, s, callback)
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


def temporal_spread(low_rank: Tensor) -> float:
    r"""``1 - sigma_1^2 / sum_i sigma_i^2`` of a background ``(T, ...)`` as a ``T x D`` matrix:
    0 for a still scene under any global lighting, larger when the background moves."""
    return _energy_spread(_temporal_spectrum(low_rank)[0])


def _energy_spread(energies: Tensor) -> float:
    """:func:`temporal_spread` from the energies ``sigma_i^2`` in ascending order."""
    energies = energies.clamp_min(0)
    return float(1 - energies[-1] / energies.sum().clamp_min(torch.finfo(energies.dtype).tiny))
