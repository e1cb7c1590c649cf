r"""What the other frames of a clip show: the start of video inpainting.

A pixel hidden in one frame is often visible in another: where the scene moves under a
still overlay, or where the camera moves. With the camera's motion a translation
:math:`d_t` per frame (content at :math:`x` in the chunk's first frame is at
:math:`x + d_t` in frame :math:`t`), every frame's observed pixels are put on one canvas
at :math:`x - d_t`. Each frame's hidden pixels take the value of the nearest frame in
time that shows them there (nearest, not a median over the chunk: a median gives the
still background, and on a crowded real clip, vtest.avi with pedestrians crossing a
caption, it scored 4.5 dB below per-frame Telea), where that frame agrees with this one
around the pixel; what no frame of the chunk shows is filled from the frame's own pixels
around it (:func:`lrrtool.tasks.starts.start_by_region`, the harmonic fill by default).

The same motion lets patches span frames (:func:`frame_cubes`, video denoising's cubes):
each frame stacked with the next ones, moved back where the camera took them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.patches import TemporalSearch
from lrrtool.tasks.starts import grown_box, start_by_region
from lrrtool.workers import run_all

#: A shift between neighbouring frames is searched up to this share of the smaller side.
MAX_SHIFT_SHARE = 0.1
#: The coarsest level of the search keeps at least this many pixels a side.
COARSEST_SIDE = 16
#: A shift is scored only where the two frames share this share of a level's pixels. A
#: quarter kept a 50 % random drop from being aligned at all (every shift scored as
#: infinite, the camera taken as still): on vtest-pan the start was 31.26 dB (29.66 with
#: a drop mask per frame) and became 35.81 (35.64) with a sixteenth and, where few whole
#: neighbourhoods are seen, the seen pixels themselves (``_detail``); caption + logo the same.
MIN_OVERLAP = 1 / 16
#: A shift's cost is taken over at most about this many pixels of a level (a grid of rows
#: and columns of a larger one): 1080p frames' finest level took most of a chunk's search.
COST_PIXELS = 2**18


def frame_shifts(frames: Tensor, fill: Tensor | None = None) -> Tensor:
    """The camera's translation ``(T, 2)`` (rows, columns; integers) of each frame of
    ``frames`` ``(T, C, H, W)`` against the first: for each pair of neighbouring frames the
    shift ``d`` (up to ``MAX_SHIFT_SHARE`` of the smaller side) that minimises the mean
    absolute difference of their luminance's detail (:func:`_detail`) over the pixels both
    observe (``fill`` ``(T, H, W)``: True = hidden; a still overlay must not pin the shift to
    zero, so hidden pixels do not count), found coarse to fine on an image pyramid (every
    shift at the coarsest level, then the 25 within 2 of twice the last at each finer one:
    with 1, a coarse level that rounds a shift of 2 the wrong way is never corrected); the
    pairs' shifts summed."""
    T, _, H, W = frames.shape
    if T < 2:
        return torch.zeros(T, 2, dtype=torch.long, device=frames.device)
    grey = frames.float().mean(1, keepdim=True)  # (T, 1, H, W)
    known = torch.ones_like(grey) if fill is None else (~fill).float()[:, None]
    pyramid = [(grey * known, known)]
    while min(pyramid[-1][0].shape[-2:]) >= 2 * COARSEST_SIDE:
        total, weight = (F.avg_pool2d(x, 2) for x in pyramid[-1])
        pyramid.append((total, weight))
    levels = len(pyramid) - 1
    radius = max(2, math.ceil(MAX_SHIFT_SHARE * min(H, W) / 2**levels))
    steps = torch.zeros(T - 1, 2, dtype=torch.long, device=frames.device)
    for level in range(levels, -1, -1):
        values, seen = _detail(*pyramid[level])
        if level == levels:
            candidates = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
            centre = torch.zeros_like(steps)
        else:
            candidates = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
            centre = steps * 2
        best = torch.full((T - 1,), math.inf, device=frames.device)
        chosen = centre.clone()
        for dy, dx in candidates:
            shift = centre + torch.tensor([dy, dx], device=frames.device)
            cost = torch.stack([_shifted_cost(values, seen, p, *map(int, shift[p])) for p in range(T - 1)])
            better = cost < best
            best = torch.where(better, cost, best)
            chosen[better] = shift[better]
        steps = chosen
    return torch.cat([steps.new_zeros(1, 2), steps.cumsum(0)])


def camera_search(shifts: Tensor, reach: int, window: int | None = None) -> TemporalSearch:
    """The search of a clip's other frames (:class:`lrrtool.patches.TemporalSearch`) centred
    where the camera's motion (``shifts``, :func:`frame_shifts`) takes a patch ``dt`` frames
    later: the shift between frames ``t`` and ``t + dt`` averaged over the clip, for ``dt``
    up to ``reach``. Measured on a 2 px a frame pan (vtest-pan grey, sigma 20, 20 frames): 33.46 dB
    searched in place, 34.23 centred."""
    reach = min(reach, shifts.shape[0] - 1)
    centres = tuple(
        tuple(int(v) for v in (shifts[dt:] - shifts[:-dt]).float().mean(0).round()) for dt in range(1, reach + 1)
    )
    return TemporalSearch(reach, window, centres if any(any(c) for c in centres) else ())


def _shifted(frames: Tensor, offset: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``frames`` ``(..., H, W)`` read at ``p + offset``: ``out[..., y, x] = frames[..., y +
    dy, x + dx]``, the border repeated where that falls outside; and where it does not
    (bool ``(H, W)``)."""
    (dy, dx), (H, W) = offset, frames.shape[-2:]
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return frames, torch.ones(H, W, dtype=torch.bool, device=frames.device)
    flat = frames.reshape(-1, 1, H, W)
    padded = F.pad(flat, (pad, pad, pad, pad), mode="replicate")
    out = padded[..., pad + dy : pad + dy + H, pad + dx : pad + dx + W].reshape(frames.shape)
    ys, xs = torch.arange(H, device=frames.device) + dy, torch.arange(W, device=frames.device) + dx
    inside = ((ys >= 0) & (ys < H))[:, None] & ((xs >= 0) & (xs < W))[None, :]
    return out, inside


def frame_cubes(video: Tensor, shifts: Tensor, depth: int) -> Tensor:
    r"""Patches that span ``depth`` frames, as BM4D's cubes do: the video ``(T, C, H, W)`` as
    ``T`` frames of ``depth C`` channels, frame ``t`` holding frames ``t, ..., t + depth - 1``
    (the last frame repeated past the end), each moved by the camera's motion since frame
    ``t`` (``shifts`` ``(T, 2)``, :func:`frame_shifts`): a patch of it is a patch of frame
    ``t`` and where the camera took it in the next frames. A still scene's cube is one
    place under ``depth`` noise draws."""
    T, C = video.shape[:2]
    cubes = video.new_empty(T, depth * C, *video.shape[-2:])
    for t in range(T):
        for j in range(depth):
            k = min(t + j, T - 1)
            cubes[t, j * C : (j + 1) * C] = _shifted(video[k], tuple((shifts[k] - shifts[t]).tolist()))[0]
    return cubes


def from_cubes(cubes: Tensor, shifts: Tensor, depth: int) -> Tensor:
    """The video ``(T, C, H, W)`` whose :func:`frame_cubes` are ``cubes``: each frame the mean
    of its estimates in the cubes that hold it (its own and up to ``depth - 1`` before it),
    each moved back; a cube that held a repeated border instead of a pixel does not count
    for it."""
    T, C = cubes.shape[0], cubes.shape[1] // depth
    total, count = torch.zeros_like(cubes[:, :C]), cubes.new_zeros(T, 1, *cubes.shape[-2:])
    for t in range(T):
        for j in range(depth):
            if t + j < T:
                back, seen = _shifted(cubes[t, j * C : (j + 1) * C], tuple((shifts[t] - shifts[t + j]).tolist()))
                total[t + j] += back * seen
                count[t + j] += seen
    return total / count


def _detail(total: Tensor, weight: Tensor, side: int = 5) -> tuple[Tensor, Tensor]:
    """A level of the pyramid (sums ``total`` of the seen pixels' luminance and their share
    ``weight``) as its detail, the luminance less its ``side x side`` mean (smooth shading
    and lighting out: a smooth scene's squared difference barely changes over a few
    pixels of shift), and where that detail is known: pixels whose whole neighbourhood is seen."""
    mean = lambda x: F.avg_pool2d(x, side, 1, side // 2, count_include_pad=False)  # noqa: E731
    values = total / weight.clamp_min(1e-6)
    seen = weight > 0.5
    share = mean(seen.float())
    filled = torch.where(seen, values, mean(values * seen) / share.clamp_min(1e-6))
    known = share > 0.999
    if float(known.float().mean()) < 0.5:  # scattered drops: few whole neighbourhoods are seen
        known = seen & (share >= 0.5)
    return filled - mean(filled), known.float()


def _shifted_cost(values: Tensor, seen: Tensor, pair: int, dy: int, dx: int) -> Tensor:
    """Mean absolute difference of frame ``pair + 1`` at ``x + d`` and frame ``pair`` at ``x``
    over the pixels both see (absolute: what moves through the scene weighs less); infinite
    when they share less than ``MIN_OVERLAP`` of the frame."""
    H, W = values.shape[-2:]
    if abs(dy) >= H or abs(dx) >= W:
        return values.new_tensor(math.inf)
    step = max(1, math.isqrt(H * W // COST_PIXELS))  # every step-th row and column of a large frame
    here = (slice(max(0, -dy), H - max(0, dy), step), slice(max(0, -dx), W - max(0, dx), step))
    there = (slice(max(0, dy), H + min(0, dy), step), slice(max(0, dx), W + min(0, dx), step))
    a, b = values[pair, 0][here], values[pair + 1, 0][there]
    both = seen[pair, 0][here] * seen[pair + 1, 0][there]
    count = both.sum()
    if count * step * step < H * W * MIN_OVERLAP:
        return values.new_tensor(math.inf)
    return ((a - b).abs() * both).sum() / count


def temporal_start(
    frames: Tensor,
    fill: Tensor,
    *,
    shifts: Tensor | None = None,
    smooth: str = "harmonic",
    wanted: slice = slice(None),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, dict[str, object]]:
    """Each frame's hidden pixels from what the other frames show (see the module): the
    frames ``(T, C, H, W)`` with ``fill`` ``(T, H, W)`` (True = hidden) replaced from the
    nearest frame that shows them, once aligned (``shifts``: the camera's, None: found by
    :func:`frame_shifts`), where that frame agrees with this one around them
    (:func:`_agrees`); the rest filled in each frame by the ``smooth`` fill
    (:data:`lrrtool.tasks.starts.SMOOTH_FILLS`). Only the frames ``wanted`` are filled;
    the others are sources only, their hidden pixels left as they are.
    Returns ``(start, details)``: ``shift`` (the camera's largest translation, pixels),
    ``shown_by_other_frames`` (the share of hidden pixels taken from another frame) and
    ``unseen_start`` (the fill of the others)."""
    T, C, H, W = frames.shape
    shifts = frame_shifts(frames, fill) if shifts is None else shifts
    low, high = shifts.min(0).values, shifts.max(0).values
    rows, cols = H + int(high[0] - low[0]), W + int(high[1] - low[1])
    # Frame t's pixel y lies on the canvas at y - d_t + (high - low) offset: place each frame.
    place = (high - shifts).tolist()
    canvas = frames.new_full((T, C, rows, cols), float("nan"))
    for t, (top, left) in enumerate(place):
        canvas[t, :, top : top + H, left : left + W] = frames[t].masked_fill(fill[t], float("nan"))
    out = frames.clone()
    targets = set(range(T)[wanted])
    unseen = fill.clone()
    unseen[[t for t in range(T) if t not in targets]] = False
    for t, (top, left) in enumerate(place):
        if t not in targets or not bool(fill[t].any()):
            continue
        rows_t, cols_t = _box(fill[t])
        grown = grown_box(rows_t, cols_t, (AGREE_SIDE // 2, AGREE_SIDE // 2), H, W)
        inner = (slice(rows_t.start - grown[0].start, rows_t.stop - grown[0].start),
                 slice(cols_t.start - grown[1].start, cols_t.stop - grown[1].start))  # fmt: skip
        aligned = canvas[:, :, top + grown[0].start : top + grown[0].stop, left + grown[1].start : left + grown[1].stop]
        todo = fill[t, rows_t, cols_t].clone()
        patch = out[t, :, rows_t, cols_t]
        for s_ in sorted(range(T), key=lambda s_: (abs(s_ - t), s_)):
            if s_ == t:
                continue
            source = aligned[s_][(slice(None), *inner)]
            got = todo & ~source[0].isnan()
            if not bool(got.any()):
                continue
            got &= _agreement_near(aligned[t], aligned[s_], got, inner)
            patch = torch.where(got, source, patch)
            todo &= ~got
            if not bool(todo.any()):
                break
        out[t, :, rows_t, cols_t] = patch
        unseen[t, rows_t, cols_t] = todo
    del canvas
    hidden = int(fill[sorted(targets)].sum())
    shown = hidden - int(unseen.sum())
    details: dict[str, object] = {"shift": int(shifts.abs().max())}
    spatial = [t for t in range(T) if bool(unseen[t].any())]
    if spatial and all(torch.equal(unseen[t], unseen[spatial[0]]) for t in spatial):
        # One hole in every frame (a still overlay no frame sees under): one solve, the
        # frames as channels (vtest, 20 frames of 320x240: 10.2 s one by one, 3.1 s at once).
        stacked = start_by_region(
            out[spatial].flatten(0, 1), unseen[spatial[0]], test=False, smooth=smooth, progress=progress
        )[0]
        out[spatial] = stacked.reshape(len(spatial), C, H, W)
    elif spatial:  # what no frame shows: each frame filled from its own pixels around it

        def one(t: int) -> Tensor:
            return start_by_region(out[t], unseen[t], test=False, smooth=smooth)[0]

        for t, filled in zip(spatial, run_all(one, spatial, done=progress), strict=True):
            out[t] = filled
    if spatial:
        details["unseen_start"] = smooth
    details["shown_by_other_frames"] = round(shown / max(hidden, 1), 4)
    return out, details


#: :func:`_agrees`: the side of the square over which two frames are compared, and the
#: largest mean absolute difference (of [0, 1] values) at which they agree. Measured on
#: vtest-pan (a 2 px a frame pan over pedestrians, caption + logo, 20 frames; the start
#: alone, harmonic fill for the rest): every hidden pixel from the nearest frame that shows
#: it, 18.12 dB (even one frame away: 17.4 dB, where the harmonic fill has 21.0: people
#: move); only where the frames agree, side 31: 21.20 / 21.25 / 21.22 dB at 4 / 8 / 12 of
#: 255 (sides 15, 47, 63: at most 21.06, 21.20, 21.13; a prototype that tried the nearest
#: frame only; this code, which tries the next frame where one disagrees: 21.27 at side 31
#: and 8/255); the harmonic fill alone 21.01.
AGREE_SIDE = 31
AGREE_LEVEL = 8 / 255


def _agrees(frame: Tensor, other: Tensor) -> Tensor:
    """Where ``other`` ``(C, h, w)`` (another frame aligned to ``frame``; NaN where not
    seen) shows the same scene as ``frame`` around a pixel: the mean absolute difference
    over the pixels both see in the :data:`AGREE_SIDE` square around it is under
    :data:`AGREE_LEVEL` (bool ``(h, w)``; False where they share no pixel there). Where
    the scene under an overlay moves with the camera the frames agree and the other
    frame's pixels are the truth; where people walk past they differ around the hole too."""
    difference = (frame - other).abs().mean(0)
    both = ~difference.isnan()
    # Box sums as two 1-D passes (2 x 31 reads a pixel, not 31^2): the ratio of two sums
    # over the same square is the mean, whatever the windows' common scale.
    row = lambda x: F.avg_pool2d(x, (AGREE_SIDE, 1), 1, (AGREE_SIDE // 2, 0))  # noqa: E731
    box = lambda x: F.avg_pool2d(row(x[None, None]), (1, AGREE_SIDE), 1, (0, AGREE_SIDE // 2))[0, 0]  # noqa: E731
    shared = box(both.to(frame.dtype))
    mean = box(difference.nan_to_num(0)) / shared.clamp_min(1e-12)
    return (shared > 1e-6) & (mean < AGREE_LEVEL)


def _agreement_near(frame: Tensor, other: Tensor, wanted: Tensor, inner: tuple[slice, slice]) -> Tensor:
    """:func:`_agrees` of ``frame`` and ``other`` ``(C, h, w)`` at the pixels of ``inner``
    (their part of the frames), bool like ``wanted`` ``(h', w')``, computed only on the
    box of ``wanted`` grown by half the square: the same values as on the whole frames (a
    pixel's square lies in that box), where a pan reveals a few columns a frame."""
    r, c = _box(wanted)
    rows = slice(r.start + inner[0].start, r.stop + inner[0].start)  # in the frames
    cols = slice(c.start + inner[1].start, c.stop + inner[1].start)
    near_rows, near_cols = grown_box(rows, cols, (AGREE_SIDE // 2, AGREE_SIDE // 2), *frame.shape[-2:])
    agree = _agrees(frame[:, near_rows, near_cols], other[:, near_rows, near_cols])
    out = torch.zeros_like(wanted)
    out[r, c] = agree[rows.start - near_rows.start : rows.stop - near_rows.start,
                      cols.start - near_cols.start : cols.stop - near_cols.start]  # fmt: skip
    return out


def _box(mask: Tensor) -> tuple[slice, slice]:
    """The rows and columns of the smallest box holding every True of ``mask`` ``(H, W)``."""
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
