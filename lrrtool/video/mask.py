"""The foreground mask: a hysteresis rule on the residual with the noise level per frame and region."""

from collections.abc import Iterable

import torch
from torch import Tensor

from lrrtool.errors import LRRError


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
        mask = _grow(mask, candidates, steps)
        if out is None:
            masks.append(mask)
        else:
            out[filled : filled + mask.shape[0]] = mask
        filled += mask.shape[0]
    return torch.cat(masks) if out is None else out[:filled]


def _grow(mask: Tensor, candidates: Tensor, steps: int) -> Tensor:
    """``steps`` times ``mask = dilate(mask) & candidates`` (:func:`_dilate`), in place in
    ``mask``, through two buffers made once: 5 passes over the frames a step, no new
    tensor (the step alone made three, 7 passes)."""
    wide, grown = torch.empty_like(mask), torch.empty_like(mask)
    for _ in range(steps):
        _dilate(mask, wide, grown)
        torch.logical_and(grown, candidates, out=mask)
    return mask


def _dilate(mask: Tensor, wide: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """Boolean 3x3 dilation of ``(..., H, W)`` (a pixel joins when any 8-neighbour is set):
    a horizontal then a vertical OR of shifted slices, ~30x quicker than a float
    ``max_pool2d`` on the CPU. ``wide`` (the horizontal pass) and ``out``: buffers shaped
    like ``mask`` (None: new ones)."""
    wide = torch.empty_like(mask) if wide is None else wide
    out = torch.empty_like(mask) if out is None else out
    for source, target, axis in ((mask, wide, -1), (wide, out, -2)):
        width = source.shape[axis]
        if width == 1:
            target.copy_(source)
            continue
        torch.logical_or(source.narrow(axis, 1, width - 1), source.narrow(axis, 0, width - 1),
                         out=target.narrow(axis, 1, width - 1))  # fmt: skip
        target.narrow(axis, 0, 1).copy_(source.narrow(axis, 0, 1))
        target.narrow(axis, 0, width - 1).logical_or_(source.narrow(axis, 1, width - 1))
    return out


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
    (a view for one value per frame): ``F.interpolate``'s bilinear map (``align_corners``
    False), made as ``Wy @ levels @ Wx^T`` (:func:`bilinear_weights`), 2.5x quicker on
    720p frames and equal to it within 1e-6."""
    if levels.shape[1:] == (1, 1):
        return levels.expand(shape)
    rows = bilinear_weights(shape[1], levels.shape[1], levels.dtype, levels.device)
    columns = bilinear_weights(shape[2], levels.shape[2], levels.dtype, levels.device)
    return rows @ levels @ columns.T


def bilinear_weights(size: int, cells: int, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``(size, cells)``: the weights of ``F.interpolate``'s bilinear resampling (``align_corners``
    False) of ``cells`` values to ``size``, on one axis: output ``i`` reads the cells around
    ``(i + 0.5) cells / size - 0.5`` (at least 0; the last cell repeats past the end)."""
    source = ((torch.arange(size, dtype=torch.float64) + 0.5) * (cells / size) - 0.5).clamp_min(0)
    low = source.floor().long().clamp_max(cells - 1)
    share = source - low
    weights = torch.zeros(size, cells, dtype=torch.float64)
    weights[torch.arange(size), low] += 1 - share
    weights[torch.arange(size), (low + 1).clamp_max(cells - 1)] += share
    return weights.to(dtype=dtype, device=device)


#: Temporal components kept from the working solve: singular values above this
