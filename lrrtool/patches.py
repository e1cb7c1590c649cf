r"""Non-local groups of similar patches, the batched small matrices that the core
regularises.

An image ``(C, H, W)`` has ``L = (H-p+1)(W-p+1)`` overlapping ``p x p`` patches, each a
vector of ``D = C p^2`` values (all channels jointly). A group is a reference patch and
its ``K - 1`` nearest patches (squared Euclidean distance) inside a search window: a
``K x D`` matrix that is close to low rank for natural images.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.workers import run_all

#: Groups shrunk at once within a tile (:meth:`PatchGroups.map`): their working set is
#: about ``6 K D`` values each (``bench``: 105 KB per 64 x 75 float32 group).
GROUP_BATCH = 1024


def all_patches(image: Tensor, patch: int) -> Tensor:
    """Every ``patch x patch`` patch of ``(C, H, W)`` as rows: ``(L, C*patch^2)``."""
    return F.unfold(image.unsqueeze(0), patch).squeeze(0).mT


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


def group_size(group: int, window: int, search_step: int) -> int:
    """``K``: the patches a group holds, at most one per search offset."""
    return min(group, len(search_offsets(window, search_step)))


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
    chunk: int = 64,
) -> Tensor:
    """Indices ``(G, K)`` into :func:`all_patches` rows: for each reference patch on a grid
    of step ``stride``, the ``K = group`` most similar patches (squared distance over all
    channels) among the offsets ``-window, -window + search_step, ..., window`` in each
    direction that stay inside the image (the reference itself first). ``select`` (bool
    ``(H, W)``) keeps only references whose patch touches a True pixel; ``core``
    ``(top, bottom, left, right)`` only references at rows ``top <= y < bottom`` and
    columns ``left <= x < right`` (a tile's, see :func:`tile_crops`).

    Exact search, a few offsets at a time: the distance of a reference patch to its
    shifted copy is a box mean of the squared difference image, summed only at the
    reference grid (``avg_pool2d`` with the grid's stride), so the cost is
    ``O(offsets * H * W)`` for the differences plus ``O(offsets * G * patch^2)`` for the
    windows, and a running top-K keeps memory at ``O(G * (K + chunk))`` beyond the batch.
    """
    H, W = image.shape[-2:]
    ny, nx = H - patch + 1, W - patch + 1
    if ny < 1 or nx < 1:
        return torch.zeros((0, group), dtype=torch.long, device=image.device)
    y_grid, x_grid = grid_positions(ny, stride), grid_positions(nx, stride)
    ry, rx = torch.meshgrid(y_grid, x_grid, indexing="ij")
    ry, rx = ry.reshape(-1).to(image.device), rx.reshape(-1).to(image.device)
    cell = torch.arange(ry.numel(), device=image.device)  # position of each reference in the grid
    keep = torch.ones_like(ry, dtype=torch.bool)
    if select is not None:
        touched = F.max_pool2d(select[None, None].float(), patch, stride=1).reshape(ny, nx) > 0
        keep &= touched[ry, rx]
    if core is not None:
        keep &= (ry >= core[0]) & (ry < core[1]) & (rx >= core[2]) & (rx < core[3])
    ry, rx, cell = ry[keep], rx[keep], cell[keep]
    offsets = search_offsets(window, search_step)
    k = min(group, len(offsets))
    if ry.numel() == 0:
        return torch.zeros((0, k), dtype=torch.long, device=image.device)
    padded = F.pad(image, (window, window, window, window))
    reference = ry * nx + rx
    extra = (len(y_grid) > len(range(0, ny, stride)), len(x_grid) > len(range(0, nx, stride)))
    best_distance = torch.full((ry.numel(), 0), float("inf"), dtype=image.dtype, device=image.device)
    best_index = torch.zeros((ry.numel(), 0), dtype=torch.long, device=image.device)
    # Differences of `pooled` offsets at a time (a stack of about 32 MB at most); the
    # running top-K merges every `chunk` offsets.
    pooled = int(max(1, min(8, 2**25 // (image.numel() * image.element_size()))))
    for start in range(0, len(offsets), chunk):
        distances, indices = [], []
        for first in range(start, min(start + chunk, len(offsets)), pooled):
            batch = offsets[first : min(first + pooled, start + chunk)]
            shifted = torch.stack(
                [padded[..., window + dy : window + dy + H, window + dx : window + dx + W] for dy, dx in batch]
            )
            boxes = _grid_box_means((image - shifted).square().sum(1, keepdim=True), patch, stride, extra)
            distance = boxes.reshape(len(batch), -1)[:, cell].mT  # (R, n)
            shift = torch.tensor(batch, device=image.device)
            cy, cx = ry[:, None] + shift[:, 0], rx[:, None] + shift[:, 1]
            inside = (cy >= 0) & (cy < ny) & (cx >= 0) & (cx < nx)
            distance = distance.masked_fill(~inside, float("inf"))
            distances.append(distance.masked_fill((shift == 0).all(1), -1.0))  # the reference first
            indices.append(torch.where(inside, cy * nx + cx, reference[:, None]))
        best_distance = torch.cat([best_distance, *distances], 1)
        best_index = torch.cat([best_index, *indices], 1)
        if best_distance.shape[1] > k:
            best_distance, order = best_distance.topk(k, dim=1, largest=False)
            best_index = best_index.gather(1, order)
    return best_index


def _grid_box_means(squared: Tensor, patch: int, stride: int, extra: tuple[bool, bool]) -> Tensor:
    """Means of ``patch x patch`` windows of ``squared`` ``(n, 1, H, W)`` at the positions of
    :func:`grid_positions` (every ``stride``-th, plus the last one when ``extra`` says so in that
    direction): ``(n, rows, cols)``. Only the windows read are summed."""
    out = F.avg_pool2d(squared, patch, stride)
    if extra[1]:  # the last column of windows
        out = torch.cat([out, F.avg_pool2d(squared[..., -patch:], patch, (stride, 1))], 3)
    if extra[0]:  # the last row of windows
        row = F.avg_pool2d(squared[..., -patch:, :], patch, (1, stride))
        if extra[1]:
            row = torch.cat([row, F.avg_pool2d(squared[..., -patch:, -patch:], patch)], 3)
        out = torch.cat([out, row], 2)
    return out[:, 0]


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


@dataclass(frozen=True)
class Tile:
    """A tile's groups: rows ``index`` ``(g, K)`` (int32) of :func:`all_patches` of the
    crop ``image[:, rows, cols]``; they are groups ``first .. first + g - 1`` of the whole."""

    rows: slice
    cols: slice
    index: Tensor
    first: int

    def shape(self, patch: int) -> tuple[int, int, int]:
        """``(h, w, L)``: the crop's size and its number of patches."""
        h, w = self.rows.stop - self.rows.start, self.cols.stop - self.cols.start
        return h, w, (h - patch + 1) * (w - patch + 1)


class PatchGroups:
    """Groups of similar patches found on an image ``(C, H, W)`` (see :func:`group_indices`):
    gathers them from any image of that size and averages patch estimates back.

    ``tile``: the groups are found and used a square of ``tile x tile`` reference
    positions at a time (:func:`tile_crops`), on :func:`lrrtool.workers.run_all`'s
    workers; None: one tile. The groups are the same either way (listed tile by tile);
    only the memory a step needs shrinks with the tile. :meth:`map` hands a tile's
    groups over ``batch`` at a time. ``progress(done, total)`` follows the tiles.

    ``covered`` (bool ``(H, W)``): pixels that some grouped patch covers.
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
        tile: int | None = None,
        batch: int = GROUP_BATCH,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.patch, self.shape, self.batch = patch, image.shape, batch
        self.size = group_size(group, window, search_step)
        H, W = image.shape[-2:]
        side = tile or -(-max(H, W) // stride) * stride
        crops = tile_crops(H, W, patch=patch, stride=stride, window=window, side=side)

        def find(crop: tuple[slice, slice, tuple[int, int, int, int]]) -> tuple[Tensor, Tensor]:
            rows, cols, core = crop
            index = group_indices(
                image[:, rows, cols], patch=patch, group=group, stride=stride, window=window, search_step=search_step,
                select=None if select is None else select[rows, cols], core=core,
            )  # fmt: skip
            h, w = rows.stop - rows.start, cols.stop - cols.start
            count = image.new_zeros((h - patch + 1) * (w - patch + 1))
            count.index_add_(0, index.reshape(-1), image.new_ones(index.numel()))
            coverage = F.fold(count.expand(patch**2, -1).unsqueeze(0), (h, w), patch)[0, 0]
            return index.to(torch.int32), coverage

        coverage = image.new_zeros(H, W)
        self.tiles: list[Tile] = []
        first = 0
        for (rows, cols, _), (index, counted) in zip(crops, run_all(find, crops, done=progress), strict=True):
            if index.shape[0]:
                self.tiles.append(Tile(rows, cols, index, first))
                first += index.shape[0]
                coverage[rows, cols] += counted
        self.count = first
        self.covered = coverage > 0
        self.weight = 1 / coverage.clamp_min(1)

    @property
    def index(self) -> Tensor:
        """``(G, K)`` rows of :func:`all_patches` of the whole image."""
        nx, parts = self.shape[-1] - self.patch + 1, []
        for tile in self.tiles:
            crop_nx = tile.cols.stop - tile.cols.start - self.patch + 1
            local = tile.index.long()
            parts.append((local // crop_nx + tile.rows.start) * nx + local % crop_nx + tile.cols.start)
        return torch.cat(parts) if parts else torch.zeros((0, self.size), dtype=torch.long, device=self.weight.device)

    def gather(self, image: Tensor) -> Tensor:
        """``(G, K, C patch^2)`` patch groups of ``image``."""
        parts = [all_patches(image[:, t.rows, t.cols], self.patch)[t.index.long()] for t in self.tiles]
        return torch.cat(parts) if parts else image.new_zeros(0, self.size, image.shape[0] * self.patch**2)

    def average(self, groups: Tensor) -> Tensor:
        """Mean of every group estimate of each pixel, ``(C, H, W)``; 0 where uncovered."""
        total = groups.new_zeros(groups.shape[-1] // self.patch**2, *self.shape[-2:])
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
        """Sum into ``total`` ``(C, H, W)`` the patch estimates ``estimate(part, patches)``
        of every group: ``(g, K, D)`` for the groups ``part``, given their patches of
        ``image`` (None without an image)."""
        lock = threading.Lock()

        def one(tile: Tile) -> None:
            h, w, rows = tile.shape(self.patch)
            patches = None if image is None else all_patches(image[:, tile.rows, tile.cols], self.patch)
            summed = total.new_zeros(rows, total.shape[0] * self.patch**2)
            for first in range(0, tile.index.shape[0], self.batch):
                index = tile.index[first : first + self.batch].long()
                part = slice(tile.first + first, tile.first + first + index.shape[0])
                out = estimate(part, None if patches is None else patches[index])
                summed.index_add_(0, index.reshape(-1), out.reshape(-1, out.shape[-1]))
            folded = F.fold(summed.mT.unsqueeze(0), (h, w), self.patch)[0]
            with lock:
                total[:, tile.rows, tile.cols] += folded

        run_all(one, self.tiles, done=progress)
        return total

    def group_means(self, values: Tensor) -> Tensor:
        """``(G,)``: the mean of ``values`` ``(C, H, W)`` over each group's patches."""

        def one(tile: Tile) -> Tensor:
            return all_patches(values[:, tile.rows, tile.cols], self.patch).mean(-1)[tile.index.long()].mean(-1)

        parts = run_all(one, self.tiles)
        return torch.cat(parts) if parts else values.new_zeros(0)


def tile_memory(
    channels: int, side: int, *, patch: int, group: int, stride: int, window: int, search_step: int, itemsize: int
) -> int:
    """Bytes one worker needs for a tile of ``side x side`` reference positions: the larger
    of finding its groups and shrinking them :data:`GROUP_BATCH` at a time.

    Measured by the process's peak (``VmHWM``) around finding the groups of, and one prox
    on, whole 256x256 and 512x512 images (colour K 64 and 32, grey K 48), and rounded
    up: finding, about ``100 (K + 64)`` bytes per group (the running top-K and the distances
    of a chunk of offsets) and 40 values per crop pixel and channel (shifted copies);
    shrinking, ``6 K D`` values per group of a batch and two ``L x D`` buffers of the crop."""
    K = group_size(group, window, search_step)
    D = channels * patch**2
    groups = (-(-side // stride)) ** 2
    crop = (side + 2 * window + patch) ** 2
    finding = groups * 100 * (K + 64) + crop * channels * itemsize * 40
    shrinking = min(groups, GROUP_BATCH) * 6 * K * D * itemsize + 2 * crop * D * itemsize
    return max(finding, shrinking)


#: The smallest tile, in strides.
MIN_TILE_STRIDES = 4
#: Tiles of at least this many reference positions a side are split to share the workers:
#: a crop reads ``window`` positions and a patch beyond its tile, work done twice.
SHARED_TILE = 128


def plan_tile(
    shape: tuple[int, ...], *, budget: int, workers: int, patch: int, group: int, stride: int, window: int,
    search_step: int, itemsize: int,
) -> int | None:
    """The tile side (reference positions, a multiple of ``stride``) for an image of
    ``shape`` ``(C, H, W)``: the largest whose ``workers`` tiles fit in ``budget`` bytes
    (:func:`tile_memory`), made smaller while there are fewer tiles than workers and each
    stays at least :data:`SHARED_TILE`; None for one tile. The smallest tile is
    ``MIN_TILE_STRIDES * stride`` (:func:`tile_memory` says what it needs), taken even
    when it does not fit."""
    C, H, W = shape[-3:]
    options = {"patch": patch, "group": group, "stride": stride, "window": window, "search_step": search_step}

    def fits(side: int) -> bool:
        return workers * tile_memory(C, side, itemsize=itemsize, **options) <= budget

    whole = -(-max(H, W) // stride) * stride
    side = MIN_TILE_STRIDES * stride
    while side < whole and fits(side + stride):
        side += stride
    tiles = lambda side: -(-(H - patch + 1) // side) * -(-(W - patch + 1) // side)  # noqa: E731
    while tiles(side) < workers and side // 2 >= SHARED_TILE:
        side = -(-side // 2 // stride) * stride
    return None if side >= whole else side
