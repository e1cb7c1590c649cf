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
    chunk: int = 2048,
) -> Tensor:
    """Indices ``(G, K)`` into :func:`all_patches` rows: for each reference patch on a grid
    of step ``stride``, the ``K = group`` most similar patches within ``±window`` pixels
    (the reference itself first). ``select`` (bool ``(H, W)``) keeps only references whose
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
    offsets = torch.arange(-window, window + 1, 2, device=image.device)
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
