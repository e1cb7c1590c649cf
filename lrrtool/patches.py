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

    Exact search, one offset at a time: the distance of every patch to its shifted copy is
    a box sum of the squared difference image, so the cost is ``O(offsets * H * W)``
    independent of the patch size, and memory ``O(G * (K + chunk))`` with ``chunk``
    offsets merged into a running top-K at once.
    """
    H, W = image.shape[-2:]
    ny, nx = H - patch + 1, W - patch + 1
    if ny < 1 or nx < 1:
        return torch.zeros((0, group), dtype=torch.long, device=image.device)
    ry, rx = torch.meshgrid(_grid(ny, stride), _grid(nx, stride), indexing="ij")
    ry, rx = ry.reshape(-1).to(image.device), rx.reshape(-1).to(image.device)
    if select is not None:
        touched = F.max_pool2d(select[None, None].float(), patch, stride=1).reshape(ny, nx) > 0
        keep = touched[ry, rx]
        ry, rx = ry[keep], rx[keep]
    steps = range(-window, window + 1, search_step)
    offsets = [(dy, dx) for dy in steps for dx in steps]
    if (0, 0) not in offsets:
        offsets.append((0, 0))
    k = min(group, len(offsets))
    padded = F.pad(image, (window, window, window, window))
    reference = ry * nx + rx
    best_distance = torch.full((ry.numel(), 0), float("inf"), dtype=image.dtype, device=image.device)
    best_index = torch.zeros((ry.numel(), 0), dtype=torch.long, device=image.device)
    for start in range(0, len(offsets), chunk):
        distances, indices = [], []
        for dy, dx in offsets[start : start + chunk]:
            shifted = padded[..., window + dy : window + dy + H, window + dx : window + dx + W]
            box = F.avg_pool2d((image - shifted).square().sum(0)[None, None], patch, stride=1)[0, 0]
            cy, cx = ry + dy, rx + dx
            inside = (cy >= 0) & (cy < ny) & (cx >= 0) & (cx < nx)
            distance = box[ry, rx].masked_fill(~inside, float("inf"))
            if dy == 0 and dx == 0:
                distance = torch.full_like(distance, -1.0)  # the reference first
            distances.append(distance)
            indices.append(torch.where(inside, cy * nx + cx, reference))
        best_distance = torch.cat([best_distance, torch.stack(distances, 1)], 1)
        best_index = torch.cat([best_index, torch.stack(indices, 1)], 1)
        if best_distance.shape[1] > k:
            best_distance, order = best_distance.topk(k, dim=1, largest=False)
            best_index = best_index.gather(1, order)
    return best_index


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
