r"""What the other frames of a clip show: the start of video inpainting.

A pixel hidden in one frame is often visible in another: where the scene moves under a
still overlay, or where the camera moves. With the camera's motion a translation
:math:`d_t` per frame (content at :math:`x` in the chunk's first frame is at
:math:`x + d_t` in frame :math:`t`), every frame's observed pixels are put on one canvas
at :math:`x - d_t`, and the canvas is the median of what the frames show there: the still
background, rank one over time once aligned, with what moves through it voted out. Each
frame's hidden pixels start from the canvas; what no frame of the chunk shows is filled
once on the canvas (:func:`lrrtool.tasks.starts.start_by_region`), so every frame starts
from the same fill and the start does not flicker.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lrrtool.tasks.starts import start_by_region

#: A shift between neighbouring frames is searched up to this share of each side.
MAX_SHIFT_SHARE = 0.25


def frame_shifts(frames: Tensor, fill: Tensor) -> Tensor:
    """The camera's translation ``(T, 2)`` (rows, columns; integers) of each frame of
    ``frames`` ``(T, C, H, W)`` against the first, from the phase correlation of each pair
    of neighbouring frames (their luminance, hidden pixels ``fill`` ``(T, H, W)`` set to the
    frame's observed mean, a Hann window against the borders), summed. A peak no larger
    than the correlation's typical value (no clear motion) counts as no shift."""
    T, _, H, W = frames.shape
    if T < 2:
        return torch.zeros(T, 2, dtype=torch.long, device=frames.device)
    grey = frames.mean(1, dtype=torch.float32) if frames.dtype != torch.float64 else frames.mean(1)
    known = ~fill
    means = (grey * known).flatten(1).sum(1) / known.flatten(1).sum(1).clamp_min(1)
    grey = torch.where(fill, means[:, None, None], grey) - means[:, None, None]
    window = torch.outer(torch.hann_window(H, dtype=grey.dtype, device=grey.device),
                         torch.hann_window(W, dtype=grey.dtype, device=grey.device))  # fmt: skip
    spectra = torch.fft.rfft2(grey * window)
    cross = spectra[1:] * spectra[:-1].conj()
    surface = torch.fft.irfft2(cross / cross.abs().clamp_min(1e-12), s=(H, W))  # (T - 1, H, W)
    reach_y, reach_x = int(H * MAX_SHIFT_SHARE), int(W * MAX_SHIFT_SHARE)
    surface = torch.roll(surface, (reach_y, reach_x), (1, 2))[:, : 2 * reach_y + 1, : 2 * reach_x + 1]
    flat = surface.flatten(1)
    peak, where = flat.max(1)
    clear = peak > 5 * flat.std(1)
    steps = torch.stack([where // surface.shape[2] - reach_y, where % surface.shape[2] - reach_x], 1)
    steps = steps * clear[:, None]
    return torch.cat([steps.new_zeros(1, 2), steps.cumsum(0)])


def temporal_start(
    frames: Tensor, fill: Tensor, *, progress: Callable[[int, int], None] | None = None
) -> tuple[Tensor, dict[str, object]]:
    """Each frame's hidden pixels from what the other frames show (see the module): the
    frames ``(T, C, H, W)`` with ``fill`` ``(T, H, W)`` (True = hidden) replaced from the
    aligned median canvas, what no frame shows filled on the canvas once.
    Returns ``(start, details)``: ``shift`` (the camera's largest translation, pixels),
    ``shown_by_other_frames`` (the share of hidden pixels some other frame shows) and the
    canvas fill's details."""
    T, C, H, W = frames.shape
    shifts = frame_shifts(frames, fill)
    low, high = shifts.min(0).values, shifts.max(0).values
    rows, cols = H + int(high[0] - low[0]), W + int(high[1] - low[1])
    # Frame t's pixel y lies on the canvas at y - d_t + (high - low) offset: place each frame.
    place = (high - shifts).tolist()
    canvas = frames.new_full((T, C, rows, cols), float("nan"))
    for t, (top, left) in enumerate(place):
        canvas[t, :, top : top + H, left : left + W] = frames[t].masked_fill(fill[t], float("nan"))
    median = canvas.nanmedian(0).values  # (C, rows, cols); NaN where no frame shows it
    del canvas
    unseen = median[0].isnan()
    details: dict[str, object] = {"shift": int(shifts.abs().max())}
    if bool(unseen.any()):
        filled, fill_details = start_by_region(median.nan_to_num(0.0), unseen, test=False, progress=progress)
        median = filled
        details["canvas_start"] = fill_details["start"]
    out = frames.clone()
    hidden = int(fill.sum())
    shown = 0
    for t, (top, left) in enumerate(place):
        view = median[:, top : top + H, left : left + W]
        out[t] = torch.where(fill[t], view, frames[t])
        shown += int((fill[t] & ~unseen[top : top + H, left : left + W]).sum())
    details["shown_by_other_frames"] = round(shown / max(hidden, 1), 4)
    return out, details
