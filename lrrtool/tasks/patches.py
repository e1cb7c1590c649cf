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
    chunk: int = 2048,
) -> Tensor:
    """Indices ``(G, K)`` into :func:`all_patches` rows: for each reference patch on a grid
    of step ``stride``, the ``K = group`` most similar patches among the offsets
    ``-window, -window + search_step, ..., window`` in each direction (the reference
    itself first). ``select`` (bool ``(H, W)``) keeps only references whose
    patch touches a True pixel. Search is done in chunks of ``chunk`` references to bound
    memory by ``chunk * (2 window / 2 + 1)^2 * D`` values.
    """
    H, W = image.shape[-2:]
    ny, nx = H - patch + 1, W - patch + 1
    if ny < 1 or nx < 1:
        return torch.zeros((0, group), dtype=torch.long, device=image.device)
    rows = all_patches(image, patch)
    ry, rx = torch.meshgrid(_grid(ny, stride), _grid(nx, stride), indexing="ij")
    ry, rx = ry.reshape(-1).to(image.device), rx.reshape(-1).to(image.device)
    if select is not None:
        touched = F.max_pool2d(select[None, None].float(), patch, stride=1).reshape(ny, nx) > 0
        keep = touched[ry, rx]
        ry, rx = ry[keep], rx[keep]
    offsets = torch.arange(-window, window + 1, search_step, device=image.device)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)
    k = min(group, dy.numel())
    out = []
    for start in range(0, ry.numel(), chunk):
        cy = (ry[start : start + chunk, None] + dy).clamp(0, ny - 1)
        cx = (rx[start : start + chunk, None] + dx).clamp(0, nx - 1)
        candidates = cy * nx + cx
        reference = (ry[start : start + chunk] * nx + rx[start : start + chunk]).unsqueeze(1)
        distance = (rows[candidates] - rows[reference]).square().sum(-1)
        distance = distance.masked_fill(candidates == reference, -1.0)  # reference first
        nearest = distance.topk(k, dim=1, largest=False).indices
        out.append(candidates.gather(1, nearest))
    if not out:
        return torch.zeros((0, k), dtype=torch.long, device=image.device)
    return torch.cat(out)


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
