r"""Non-local groups of similar patches, the batched small matrices that the core
regularises.

An image ``(C, H, W)`` has ``L = (H-p+1)(W-p+1)`` overlapping ``p x p`` patches, each a
vector of ``D = C p^2`` values (all channels jointly). A group is a reference patch and
its ``K - 1`` nearest patches (squared Euclidean distance) inside a search window: a
``K x D`` matrix that is close to low rank for natural images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def all_patches(image: Tensor, patch: int) -> Tensor:
    """Every ``patch x patch`` patch of ``(C, H, W)`` as rows: ``(L, C*patch^2)``."""
    return F.unfold(image.unsqueeze(0), patch).squeeze(0).mT


def _grid(length: int, step: int) -> Tensor:
    positions = list(range(0, length, step))
    if positions[-1] != length - 1:
        positions.append(length - 1)
    return torch.tensor(positions)


def group_indices(
    image: Tensor,
    *,
    patch: int,
    group: int,
    stride: int,
    window: int,
    select: Tensor | None = None,
    search_step: int = 2,
    chunk: int = 64,
) -> Tensor:
    """Indices ``(G, K)`` into :func:`all_patches` rows: for each reference patch on a grid
    of step ``stride``, the ``K = group`` most similar patches (squared distance over all
    channels) among the offsets ``-window, -window + search_step, ..., window`` in each
    direction that stay inside the image (the reference itself first). ``select`` (bool
    ``(H, W)``) keeps only references whose patch touches a True pixel.

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
    y_grid, x_grid = _grid(ny, stride), _grid(nx, stride)
    ry, rx = torch.meshgrid(y_grid, x_grid, indexing="ij")
    ry, rx = ry.reshape(-1).to(image.device), rx.reshape(-1).to(image.device)
    cell = torch.arange(ry.numel(), device=image.device)  # position of each reference in the grid
    if select is not None:
        touched = F.max_pool2d(select[None, None].float(), patch, stride=1).reshape(ny, nx) > 0
        keep = touched[ry, rx]
        ry, rx, cell = ry[keep], rx[keep], cell[keep]
    steps = range(-window, window + 1, search_step)
    offsets = [(dy, dx) for dy in steps for dx in steps]
    if (0, 0) not in offsets:
        offsets.append((0, 0))
    k = min(group, len(offsets))
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
    :func:`_grid` (every ``stride``-th, plus the last one when ``extra`` says so in that
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


class PatchGroups:
    """Groups of similar patches found on an image ``(C, H, W)`` (see :func:`group_indices`):
    gathers them from any image of that size and averages patch estimates back.

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
    ) -> None:
        self.patch, self.shape = patch, image.shape
        self.index = group_indices(
            image, patch=patch, group=group, stride=stride, window=window, select=select, search_step=search_step
        )
        H, W = image.shape[-2:]
        self.rows = (H - patch + 1) * (W - patch + 1)
        flat = self.index.reshape(-1)
        count = image.new_zeros(self.rows).index_add_(0, flat, image.new_ones(flat.numel()))
        coverage = F.fold(count.expand(patch**2, self.rows).unsqueeze(0), (H, W), patch)[0]  # (1, H, W)
        self.covered = coverage[0] > 0
        self.weight = 1 / coverage.clamp_min(1)

    def gather(self, image: Tensor) -> Tensor:
        """``(G, K, C patch^2)`` patch groups of ``image``."""
        return all_patches(image, self.patch)[self.index]

    def average(self, groups: Tensor) -> Tensor:
        """Mean of every group estimate of each pixel, ``(C, H, W)``; 0 where uncovered."""
        D = groups.shape[-1]
        total = groups.new_zeros(self.rows, D).index_add_(0, self.index.reshape(-1), groups.reshape(-1, D))
        return F.fold(total.mT.unsqueeze(0), self.shape[-2:], self.patch)[0] * self.weight
