r"""Non-local groups of similar patches, the batched small matrices that the core
regularises.

An image ``(C, H, W)`` has ``L = (H-p+1)(W-p+1)`` overlapping ``p x p`` patches, each a
vector of ``D = C p^2`` values (all channels jointly). A group is a reference patch and
its ``K - 1`` nearest patches (squared Euclidean distance) inside a search window: a
``K x D`` matrix that is close to low rank for natural images.

A video ``(T, C, H, W)`` has ``T L`` patches, ``L`` in each frame (frame ``t``'s first);
its search window reaches ``reach`` frames back and forward as well (the same spatial
window in each), so a group gathers the patch as the neighbouring frames show it. An
image is the one-frame case: every function takes both, and gives an image's results
for ``(C, H, W)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.workers import run_all

#: Groups shrunk at once within a tile (:meth:`PatchGroups.map`): their working set is
#: about ``6 K D`` values each (``bench``: 105 KB per 64 x 75 float32 group).
GROUP_BATCH = 1024
#: A tile whose groups hold fewer patch rows than this share of its crop's patches reads
#: and sums them one by one (:meth:`PatchGroups._sparse`) instead of unfolding and
#: folding the whole crop. Measured, one map of a 400x400 colour tile (K 64, one
#: thread), dense against one by one: rows/patches 0.17: 0.105 / 0.026 s; 0.53: 0.133 /
#: 0.098; 1.04: 0.196 / 0.161; 1.79: 0.230 / 0.264; 4.08 (denoising's): 0.347 / 0.565.
SPARSE_ROWS = 1.0


def all_patches(image: Tensor, patch: int) -> Tensor:
    """Every ``patch x patch`` patch of ``(C, H, W)`` as rows: ``(L, C*patch^2)``; of a
    video ``(T, C, H, W)``, frame by frame: ``(T L, C*patch^2)``."""
    if image.ndim == 3:
        return F.unfold(image.unsqueeze(0), patch).squeeze(0).mT
    return F.unfold(image, patch).mT.reshape(-1, image.shape[1] * patch**2)


def as_video(image: Tensor) -> Tensor:
    """``(T, C, H, W)``: a video as it is, an image ``(C, H, W)`` as one frame (a view)."""
    return image if image.ndim == 4 else image.unsqueeze(0)


def grid_positions(length: int, step: int) -> Tensor:
    """Positions ``0, step, 2 step, ...`` below ``length``, and ``length - 1``."""
    positions = list(range(0, length, step))
    if positions[-1] != length - 1:
        positions.append(length - 1)
    return torch.tensor(positions)


def search_offsets(window: int, search_step: int) -> list[tuple[int, int]]:
    """The ``(dy, dx)`` shifts a reference patch is compared with (itself included)."""
    steps = range(-window, window + 1, search_step)
    offsets = [(dy, dx) for dy in steps for dx in steps]
    if (0, 0) not in offsets:
        offsets.append((0, 0))
    return offsets


def frame_offsets(reach: int) -> list[int]:
    """The frame shifts ``dt`` a search covers, its own frame first: ``0, -1, 1, ..., reach``."""
    return [0, *(d for r in range(1, reach + 1) for d in (-r, r))]


@dataclass(frozen=True)
class TemporalSearch:
    """Where a clip's groups look beyond a reference's own frame: the ``reach`` frames
    before and after it, within ``window`` (None: the own frame's window; a still scene
    matches near where it was, and a wide window in every frame costs ``2 reach + 1`` times
    one frame's search) of ``centres[dt - 1]`` (rows, columns), where the camera's motion
    took the patch ``dt`` frames later (``-centre`` as many frames earlier; none given: in
    place). The default searches the own frame only (an image)."""

    reach: int = 0
    window: int | None = None
    centres: tuple[tuple[int, int], ...] = ()

    def offsets(self, window: int, search_step: int, frames: int | None = None) -> list[tuple[int, int, int]]:
        """The ``(dt, dy, dx)`` shifts a reference patch is compared with, its own frame
        first, in a clip of ``frames`` frames (None: any)."""
        reach = self.reach if frames is None else min(self.reach, frames - 1)
        other = window if self.window is None else min(self.window, window)
        out = []
        for dt in frame_offsets(reach):
            cy, cx = self.centre(dt)
            out += [(dt, cy + dy, cx + dx) for dy, dx in search_offsets(window if dt == 0 else other, search_step)]
        return out

    def centre(self, dt: int) -> tuple[int, int]:
        if dt == 0 or abs(dt) > len(self.centres):
            return 0, 0
        cy, cx = self.centres[abs(dt) - 1]
        return (cy, cx) if dt > 0 else (-cy, -cx)

    def extent(self, window: int) -> int:
        """How far from a reference the search reaches in rows or columns (pads and crops)."""
        return max([window, *(abs(c) + (self.window or window) for centre in self.centres for c in centre)])


#: The search of an image: its own frame only.
OWN_FRAME = TemporalSearch()


def group_size(
    group: int, window: int, search_step: int, temporal: TemporalSearch = OWN_FRAME, frames: int | None = None
) -> int:
    """``K``: the patches a group holds, at most one per search offset (in a clip of ``frames``)."""
    return min(group, len(temporal.offsets(window, search_step, frames)))


def group_indices(
    image: Tensor,
    *,
    patch: int,
    group: int,
    stride: int,
    window: int,
    select: Tensor | None = None,
    search_step: int = 2,
    core: tuple[int, int, int, int] | None = None,
    chunk: int = 256,
    temporal: TemporalSearch = OWN_FRAME,
    frames: tuple[int, int] | None = None,
) -> Tensor:
    """Indices ``(G, K)`` into :func:`all_patches` rows: for each reference patch on a grid
    of step ``stride`` (in every frame of a video), the ``K = group`` most similar patches
    (squared distance over all channels) among the offsets ``-window, -window +
    search_step, ..., window`` in each direction that stay inside the image, in its own
    frame and the frames ``temporal`` names (:class:`TemporalSearch`; the reference itself
    first).
    ``select`` (bool ``(H, W)``, or ``(T, H, W)`` for a video) keeps only references whose
    patch touches a True pixel; ``core`` ``(top, bottom, left, right)`` only references at
    rows ``top <= y < bottom`` and columns ``left <= x < right`` (a tile's, see
    :func:`tile_crops`), ``frames`` ``(first, stop)`` only references in those frames (the
    others are searched, not grouped).

    Exact search, a few offsets at a time: the distance of a reference patch to its
    shifted copy is a box sum of the squared difference image, summed only at the
    reference grid (rows, then columns, at the grid's stride), so the cost is
    ``O(offsets * T * H * W)`` for the differences plus ``O(offsets * G * patch^2)`` for
    the windows, and a running top-K keeps memory at ``O(G * (K + chunk))`` beyond the batch.
    """
    video = as_video(image)
    T, H, W = video.shape[0], *video.shape[-2:]
    device = video.device
    ny, nx = H - patch + 1, W - patch + 1
    if ny < 1 or nx < 1:
        return torch.zeros((0, group), dtype=torch.long, device=device)
    y_grid, x_grid = grid_positions(ny, stride), grid_positions(nx, stride)
    f0, f1 = frames or (0, T)
    rt, ry, rx = torch.meshgrid(torch.arange(f0, f1), y_grid, x_grid, indexing="ij")
    rt, ry, rx = (v.reshape(-1).to(device) for v in (rt, ry, rx))
    cell = torch.arange(ry.numel(), device=device)  # position of each reference in the frames' grids
    keep = torch.ones_like(ry, dtype=torch.bool)
    if select is not None:
        touched = F.max_pool2d(select.reshape(-1, 1, H, W).float(), patch, stride=1).reshape(-1, ny, nx) > 0
        keep &= touched[rt if touched.shape[0] > 1 else 0, ry, rx]
    if core is not None:
        keep &= (ry >= core[0]) & (ry < core[1]) & (rx >= core[2]) & (rx < core[3])
    rt, ry, rx, cell = rt[keep], ry[keep], rx[keep], cell[keep]
    offsets = temporal.offsets(window, search_step, T)
    window = temporal.extent(window)  # the padding every offset stays within
    k = min(group, len(offsets))
    if ry.numel() == 0:
        return torch.zeros((0, k), dtype=torch.long, device=device)
    padded = F.pad(video, (window, window, window, window))
    L = ny * nx
    extra = (len(y_grid) > len(range(0, ny, stride)), len(x_grid) > len(range(0, nx, stride)))
    whole_grid = bool(keep.all())  # every reference of the frames: no gather of the box sums
    y_grid, x_grid = y_grid.to(device), x_grid.to(device)
    # The running top-K keeps each candidate's offset number, not its patch index (made
    # once at the end): columns [0, filled) hold the best so far, a chunk's land after them.
    best_distance = torch.empty((ry.numel(), k + chunk), dtype=video.dtype, device=device)
    best_offset = torch.empty((ry.numel(), k + chunk), dtype=torch.int32, device=device)
    filled = 0
    # Differences of `pooled` offsets of one frame shift at a time (about 32 MB at most);
    # the running top-K merges every `chunk` offsets.
    pooled = int(max(1, min(8, 2**25 // (video.numel() * video.element_size()))))
    buffer = torch.empty(pooled * video.numel(), dtype=video.dtype, device=device)  # reused: no page faults
    for start in range(0, len(offsets), chunk):
        first = start
        while first < min(start + chunk, len(offsets)):
            dt = offsets[first][0]
            last = first + 1
            while last < min(first + pooled, start + chunk, len(offsets)) and offsets[last][0] == dt:
                last += 1
            batch = offsets[first:last]
            first = last
            lo, hi = max(f0, -dt), min(f1, T - dt)  # reference frames whose frame t + dt exists
            if hi <= lo:
                continue
            difference = buffer[: len(batch) * (hi - lo) * video[0].numel()].view(len(batch), hi - lo, *video.shape[1:])
            for shifted, (_, y, x) in zip(difference, batch, strict=True):
                torch.sub(
                    video[lo:hi],
                    padded[lo + dt : hi + dt, :, window + y : window + y + H, window + x : window + x + W],
                    out=shifted,
                )
            difference.square_()
            squared = difference[:, :, 0]  # (n, frames, H, W): the channels summed into the first
            for channel in range(1, difference.shape[2]):
                squared += difference[:, :, channel]
            boxes = _grid_box_sums(squared.reshape(-1, H, W), patch, stride, extra)
            boxes = boxes.reshape(len(batch), hi - lo, len(y_grid), len(x_grid))
            # A candidate outside the frame has no distance.
            shift = torch.tensor([(y, x) for _, y, x in batch], device=device)
            rows, cols = y_grid + shift[:, :1], x_grid + shift[:, 1:]
            outside = ((rows < 0) | (rows >= ny))[:, :, None] | ((cols < 0) | (cols >= nx))[:, None, :]
            boxes.masked_fill_(outside[:, None], float("inf"))
            if dt == 0:
                boxes[(shift == 0).all(1)] = -1.0  # the reference first
            boxes = boxes.reshape(len(batch), -1)
            if (lo, hi) != (f0, f1):  # no frame t + dt: no distance
                cells = boxes.shape[1] // (hi - lo)
                boxes = F.pad(boxes, ((lo - f0) * cells, (f1 - hi) * cells), value=float("inf"))
            columns = slice(filled, filled + len(batch))
            best_distance[:, columns] = (boxes if whole_grid else boxes[:, cell]).mT
            best_offset[:, columns] = torch.arange(last - len(batch), last, dtype=torch.int32, device=device)
            filled += len(batch)
        if filled > k:
            distance, order = best_distance[:, :filled].topk(k, dim=1, largest=False, sorted=False)
            best_offset[:, :k] = best_offset[:, :filled].gather(1, order)
            best_distance[:, :k] = distance
            filled = k
    order = best_distance[:, :filled].sort(dim=1).indices  # the reference first, then the nearest
    chosen = best_offset[:, :filled].gather(1, order).long()
    dt, dy, dx = torch.tensor(offsets, device=device)[chosen].unbind(-1)
    t, cy, cx = rt[:, None] + dt, ry[:, None] + dy, rx[:, None] + dx
    inside = (cy >= 0) & (cy < ny) & (cx >= 0) & (cx < nx) & (t >= 0) & (t < T)
    return torch.where(inside, t * L + cy * nx + cx, (rt * L + ry * nx + rx)[:, None])


def _grid_box_sums(squared: Tensor, patch: int, stride: int, extra: tuple[bool, bool]) -> Tensor:
    """Sums of ``patch x patch`` windows of ``squared`` ``(n, H, W)`` at the positions of
    :func:`grid_positions` (every ``stride``-th, plus the last one when ``extra`` says so in that
    direction): ``(n, rows, cols)``. Only the windows read are summed, rows first (1.6x
    quicker than ``avg_pool2d`` on 512x512, patch 6, stride 4)."""
    rows = squared.unfold(1, patch, stride).sum(-1)  # (n, rows, W)
    if extra[0]:  # the last row of windows
        rows = torch.cat([rows, squared[:, -patch:].sum(1, keepdim=True)], 1)
    out = rows.unfold(2, patch, stride).sum(-1)
    if extra[1]:  # the last column of windows
        out = torch.cat([out, rows[..., -patch:].sum(2, keepdim=True)], 2)
    return out


def tile_crops(
    height: int, width: int, *, patch: int, stride: int, window: int, side: int
) -> list[tuple[slice, slice, tuple[int, int, int, int]]]:
    """The reference patches of a ``height x width`` image split into squares of ``side``
    positions (a multiple of ``stride``): for each square, the crop of the image that its
    groups read (every search offset and every member patch), and the square in the
    crop's coordinates (``core`` of :func:`group_indices`).

    A crop starts on the reference grid (a multiple of ``stride``), so its own grid is
    the image's, and it reaches ``window`` positions and a patch past the square, so
    every reference in the square finds in the crop the same group as in the image."""
    if side % stride:
        raise LRRError(f"a tile's side ({side}) must be a multiple of the stride ({stride})")
    ny, nx = height - patch + 1, width - patch + 1

    def spans(length: int, count: int) -> list[tuple[slice, int, int]]:
        out = []
        for first in range(0, count, side):
            start = max(0, (first - window) // stride * stride)
            stop = min(length, first + side - 1 + window + patch)
            out.append((slice(start, stop), first - start, min(first + side, count) - start))
        return out

    return [
        (rows, cols, (top, bottom, left, right))
        for rows, top, bottom in spans(height, ny)
        for cols, left, right in spans(width, nx)
    ]


def fit_crop(
    crop: tuple[slice, slice, tuple[int, int, int, int]],
    touched: Tensor,
    *,
    patch: int,
    stride: int,
    window: int,
    height: int,
    width: int,
) -> tuple[slice, slice, tuple[int, int, int, int]] | None:
    """A crop of :func:`tile_crops` cut down to what the references of its square that
    ``touched`` (bool ``(H - patch + 1, W - patch + 1)``, True at the positions kept) read:
    the same groups from a smaller crop (holes a few pixels high in a square tile); None
    when the square keeps no reference. The crop still starts on the reference grid."""
    rows, cols, (top, bottom, left, right) = crop
    y0, x0 = rows.start + top, cols.start + left  # the square, in the image
    region = touched[y0 : rows.start + bottom, x0 : cols.start + right]
    if not bool(region.any()):
        return None

    def span(hits: Tensor, first: int, length: int) -> tuple[slice, int, int]:
        where = torch.nonzero(hits).flatten()
        low, high = first + int(where[0]), first + int(where[-1]) + 1  # kept positions low..high-1
        start = max(0, (low - window) // stride * stride)
        return slice(start, min(length, high - 1 + window + patch)), low - start, high - start

    new_rows, top, bottom = span(region.any(1), y0, height)
    new_cols, left, right = span(region.any(0), x0, width)
    return new_rows, new_cols, (top, bottom, left, right)


@dataclass(frozen=True)
class Tile:
    """A tile's groups: rows ``index`` ``(g, K)`` (int32) of :func:`all_patches` of the
    crop ``image[..., rows, cols]`` (every frame of a video); they are groups
    ``first .. first + g - 1`` of the whole."""

    rows: slice
    cols: slice
    index: Tensor
    first: int
    frames: slice = field(default_factory=lambda: slice(0, 1))

    def crop(self, signal: Tensor) -> Tensor:
        """The tile's crop of an image ``(C, H, W)`` or a video ``(T, C, H, W)`` (its frames)."""
        if signal.ndim == 3:
            return signal[:, self.rows, self.cols]
        return signal[self.frames, :, self.rows, self.cols]

    def shape(self, patch: int) -> tuple[int, int, int]:
        """``(h, w, L)``: the crop's size and its number of patches in one frame."""
        h, w = self.rows.stop - self.rows.start, self.cols.stop - self.cols.start
        return h, w, (h - patch + 1) * (w - patch + 1)


def _fold(rows: Tensor, frames: int, size: tuple[int, int], patch: int) -> Tensor:
    """Sum patch rows ``(frames L, D)`` (:func:`all_patches` order) into ``(frames, D / patch^2, h, w)``."""
    return F.fold(rows.reshape(frames, -1, rows.shape[-1]).mT, size, patch)


def _fold_columns(columns: Tensor, frames: int, size: tuple[int, int], patch: int) -> Tensor:
    """:func:`_fold` of patches held as columns ``(D, frames L)``: for one frame a view that
    ``F.fold`` reads as it is (measured, a 560x560 colour crop: 0.15 s for the batches'
    sums and the fold against 0.24 s with rows, which ``F.fold`` reads transposed)."""
    per_frame = columns.reshape(columns.shape[0], frames, -1).transpose(0, 1)
    return F.fold(per_frame if frames == 1 else per_frame.contiguous(), size, patch)


class PatchGroups:
    """Groups of similar patches found on an image ``(C, H, W)`` or a video ``(T, C, H, W)``
    (see :func:`group_indices`; ``temporal``: where the other frames are searched, a reference's
    own): gathers them from any signal of that shape and averages patch estimates back.

    ``tile``: the groups are found and used a square of ``tile x tile`` reference
    positions at a time (:func:`tile_crops`), and ``span`` frames at a time (with the
    ``reach`` frames around them; None: every frame), on :func:`lrrtool.workers.run_all`'s
    workers; None: one tile. The groups are the same
    either way (listed tile by tile); only the memory a step needs shrinks with the tile.
    :meth:`map` hands a tile's groups over ``batch`` at a time. ``progress(done, total)``
    follows the tiles.

    ``covered`` (bool ``(H, W)``; ``(T, 1, H, W)`` for a video): pixels that some grouped
    patch covers.
    """

    def __init__(
        self,
        image: Tensor,
        *,
        patch: int,
        group: int,
        stride: int,
        window: int,
        select: Tensor | None = None,
        search_step: int = 2,
        temporal: TemporalSearch = OWN_FRAME,
        tile: int | None = None,
        span: int | None = None,
        batch: int = GROUP_BATCH,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.patch, self.shape, self.batch = patch, image.shape, batch
        video = as_video(image)
        T, H, W = video.shape[0], *video.shape[-2:]
        reach = min(temporal.reach, T - 1)
        self.size = group_size(group, window, search_step, temporal, T)
        extent = temporal.extent(window)  # what a crop must hold around its references
        side = tile or -(-max(H, W) // stride) * stride
        squares = tile_crops(H, W, patch=patch, stride=stride, window=extent, side=side)
        if select is not None:
            select = select.reshape(-1, H, W)
            touched = F.max_pool2d(select.any(0)[None, None].float(), patch, stride=1)[0, 0] > 0
            fit = {"patch": patch, "stride": stride, "window": extent, "height": H, "width": W}
            squares = [c for c in (fit_crop(crop, touched, **fit) for crop in squares) if c is not None]
        spans = [(a, min(a + (span or T), T)) for a in range(0, T, span or T)]
        crops = [(first, stop, *square) for first, stop in spans for square in squares]

        coverage = video.new_zeros(T, 1, H, W)
        adding = threading.Lock()

        def find(crop) -> Tensor:
            first, stop, rows, cols, core = crop
            frames = slice(max(first - reach, 0), min(stop + reach, T))
            chosen = None if select is None else select[frames if select.shape[0] > 1 else slice(None), rows, cols]
            index = group_indices(
                video[frames, :, rows, cols], patch=patch, group=group, stride=stride, window=window,
                search_step=search_step, select=chosen, core=core, temporal=temporal,
                frames=(first - frames.start, stop - frames.start),
            )  # fmt: skip
            h, w = rows.stop - rows.start, cols.stop - cols.start
            count = video.new_zeros((frames.stop - frames.start) * (h - patch + 1) * (w - patch + 1))
            count.index_add_(0, index.reshape(-1), video.new_ones(index.numel()))
            counted = _fold(count[:, None].expand(-1, patch**2), frames.stop - frames.start, (h, w), patch)
            # Added here, as each tile is found: whole counts, exact in any order, and no
            # tile's count waits for the others (at 12 MP they held 57 MB more at a regroup).
            with adding:
                coverage[frames, :, rows, cols] += counted
            return index.to(torch.int32)

        self.tiles: list[Tile] = []
        first = 0
        for (a, b, rows, cols, _), index in zip(crops, run_all(find, crops, done=progress), strict=True):
            if index.shape[0]:
                frames = slice(max(a - reach, 0), min(b + reach, T))
                self.tiles.append(Tile(rows, cols, index, first, frames))
                first += index.shape[0]
        if image.ndim == 3:
            coverage = coverage[0, 0]
        self.count = first
        self.covered = coverage > 0
        self.weight = coverage.clamp_min_(1).reciprocal_()  # in place: no second image-sized buffer

    @property
    def index(self) -> Tensor:
        """``(G, K)`` rows of :func:`all_patches` of the whole signal."""
        ny, nx, parts = self.shape[-2] - self.patch + 1, self.shape[-1] - self.patch + 1, []
        for tile in self.tiles:
            _, _, crop_patches = tile.shape(self.patch)
            crop_nx = tile.cols.stop - tile.cols.start - self.patch + 1
            local = tile.index.long()
            frame, local = local // crop_patches + tile.frames.start, local % crop_patches
            y, x = local // crop_nx + tile.rows.start, local % crop_nx + tile.cols.start
            parts.append(frame * ny * nx + y * nx + x)
        return torch.cat(parts) if parts else torch.zeros((0, self.size), dtype=torch.long, device=self.weight.device)

    def gather(self, image: Tensor) -> Tensor:
        """``(G, K, C patch^2)`` patch groups of ``image``."""
        parts = [all_patches(t.crop(image), self.patch)[t.index.long()] for t in self.tiles]
        channels = image.shape[-3]
        return torch.cat(parts) if parts else image.new_zeros(0, self.size, channels * self.patch**2)

    def average(self, groups: Tensor) -> Tensor:
        """Mean of every group estimate of each pixel, shaped like the signal; 0 where uncovered."""
        channels = groups.shape[-1] // self.patch**2
        total = groups.new_zeros(*self.shape[:-3], channels, *self.shape[-2:])
        return self._map(total, lambda part, _: groups[part], None) * self.weight

    def map(
        self, image: Tensor, work: Callable[[Tensor, slice], Tensor], progress: Callable[[int, int], None] | None = None
    ) -> Tensor:
        """``average(work(gather(image)))`` where covered, ``image`` elsewhere, a tile at a
        time on the workers and ``batch`` groups at a time: ``work(groups, part)`` gets
        ``(g, K, D)`` groups and their place in the whole batch and returns their
        estimates. ``progress(done, total)`` follows the tiles."""
        total = self._map(torch.zeros_like(image), lambda part, patches: work(patches, part), image, progress)
        return torch.where(self.covered, total.mul_(self.weight), image)

    def _map(self, total: Tensor, estimate, image: Tensor | None, progress=None) -> Tensor:
        """Sum into ``total`` (the signal's shape) the patch estimates ``estimate(part, patches)``
        of every group: ``(g, K, D)`` for the groups ``part``, given their patches of
        ``image`` (None without an image)."""
        # Tiles overlap, so their sums are added in tile order (float sums depend on the
        # order): a finished tile waits for the one before it. The pool starts tiles in
        # order, so that one is running or done; ``stopped`` frees the waiters on an error.
        turn, state = threading.Condition(), {"next": 0, "stopped": False}
        channels = total.shape[-3]

        def one(numbered: tuple[int, Tile]) -> None:
            k, tile = numbered
            h, w, rows = tile.shape(self.patch)
            frames = tile.frames.stop - tile.frames.start
            if tile.index.numel() < SPARSE_ROWS * frames * rows:
                folded = self._sparse(tile, total, estimate, image)
            else:
                patches = None if image is None else all_patches(tile.crop(image), self.patch)
                summed = total.new_zeros(channels * self.patch**2, frames * rows)  # patches as columns
                for first in range(0, tile.index.shape[0], self.batch):
                    index = tile.index[first : first + self.batch].long()
                    part = slice(tile.first + first, tile.first + first + index.shape[0])
                    out = estimate(part, None if patches is None else patches[index])
                    summed.index_add_(1, index.reshape(-1), out.reshape(-1, out.shape[-1]).T.contiguous())
                folded = _fold_columns(summed, frames, (h, w), self.patch)
            with turn:
                turn.wait_for(lambda: state["next"] == k or state["stopped"])
                if state["stopped"]:
                    return
                if total.ndim == 3:
                    total[:, tile.rows, tile.cols] += folded[0]
                else:
                    total[tile.frames, :, tile.rows, tile.cols] += folded
                state["next"] += 1
                turn.notify_all()

        try:
            run_all(one, list(enumerate(self.tiles)), done=progress)
        finally:
            with turn:
                state["stopped"] = True
                turn.notify_all()
        return total

    def _sparse(self, tile: Tile, total: Tensor, estimate, image: Tensor | None) -> Tensor:
        """:meth:`_map`'s work on a tile whose groups hold few of its crop's patches (the
        holes of an inpainting): each grouped patch's pixels read and its estimate summed
        in place, one of the ``D`` patch offsets at a time, instead of unfolding and
        folding the whole crop. Returns the crop's sums ``(frames, C, h, w)``."""
        h, w, rows = tile.shape(self.patch)
        frames, channels, p = tile.frames.stop - tile.frames.start, total.shape[-3], self.patch
        crop = None if image is None else tile.crop(image).reshape(-1)
        summed = total.new_zeros(frames * channels * h * w)
        # The pixel of offset d = (c, i, j) (all_patches' order) of patch r = (frame, y, x).
        c, i, j = torch.meshgrid(*(torch.arange(n, device=total.device) for n in (channels, p, p)), indexing="ij")
        offsets = (c * h * w + i * w + j).reshape(-1)
        for first in range(0, tile.index.shape[0], self.batch):
            index = tile.index[first : first + self.batch].long()
            part = slice(tile.first + first, tile.first + first + index.shape[0])
            r = index.reshape(-1)
            local = r % rows
            corner = (r // rows) * channels * h * w + (local // (w - p + 1)) * w + local % (w - p + 1)
            patches = None
            if crop is not None:
                patches = torch.stack([crop[corner + d] for d in offsets.tolist()], 1).reshape(*index.shape, -1)
            out = estimate(part, patches).reshape(-1, offsets.numel()).T.contiguous()
            for d, values in zip(offsets.tolist(), out, strict=True):
                summed.index_add_(0, corner + d, values)
        return summed.reshape(frames, channels, h, w)

    def group_means(self, values: Tensor) -> Tensor:
        """``(G,)``: the mean of ``values`` (the signal's shape) over each group's patches."""

        def one(tile: Tile) -> Tensor:
            return all_patches(tile.crop(values), self.patch).mean(-1)[tile.index.long()].mean(-1)

        parts = run_all(one, self.tiles)
        return torch.cat(parts) if parts else values.new_zeros(0)
