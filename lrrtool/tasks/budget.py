"""Memory budgets: how much of ``memory_gib`` a task's whole-image buffers take, the tile
of patch groups the rest allows (:func:`plan_tile`, :func:`tile_memory`), and the frames
of a clip solved at once (:func:`chunk_plan`).

A budget covers the whole process: :data:`RUNTIME_GIB` for Python, torch and the media
libraries, the task's image-sized buffers, the stored group indices, and one tile per
worker. A budget too small for the settings is refused before any work starts.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.patches import GROUP_BATCH, OWN_FRAME, TemporalSearch, grid_positions, group_size
from lrrtool.workers import workers

#: The process itself (Python, torch, imageio) and what its heap keeps: 0.35 GiB peak resident
#: on the 192x144 sample, so the budget left for the work is ``memory_gib`` minus this.
RUNTIME_GIB = 0.45
#: The share of the budget the tiles are not planned into. The peak of one command varies
#: from run to run with how the workers' tiles coincide: a 12 MP photo with a random 60 %
#: drop (2 GiB, tiles planned to the whole budget) peaked at 2.01, 1.98, 1.92 and 1.94 GiB
#: in four runs (the last two after two transient buffers were cut).
HEADROOM = 0.05


def reference_count(shape: tuple[int, ...], *, patch: int, stride: int, select: Tensor | None = None) -> int:
    """How many groups a patch-group lift makes of an image of ``shape`` ``(C, H, W)`` (or a
    video ``(T, C, H, W)``, every frame): reference positions on the grid, only those
    touching ``select`` (bool ``(H, W)``, or ``(T, H, W)``)."""
    frames = shape[0] if len(shape) == 4 else 1
    rows = grid_positions(shape[-2] - patch + 1, stride)
    cols = grid_positions(shape[-1] - patch + 1, stride)
    if select is None:
        return rows.numel() * cols.numel() * frames
    touched = F.max_pool2d(select.reshape(-1, 1, *shape[-2:]).float(), patch, stride=1)[:, 0] > 0
    count = int(touched[:, rows.to(select.device)][..., cols.to(select.device)].sum())
    return count * frames if touched.shape[0] == 1 else count


def frame_span(signal: Tensor) -> int | None:
    """Reference frames a tile of a video ``(T, C, H, W)`` groups: the frames shared in two
    spans per worker (tiles in time as well as in space, so a chunk of small frames keeps
    every worker busy); None for an image or one frame."""
    if signal.ndim != 4 or signal.shape[0] < 2:
        return None
    return -(-signal.shape[0] // (2 * workers()))


def patch_tile(
    image: Tensor,
    memory_gib: float | None,
    *,
    buffers: int,
    patch: int,
    group: int,
    stride: int,
    window: int,
    search_step: int,
    select: Tensor | None = None,
    temporal: TemporalSearch = OWN_FRAME,
    batch: int = GROUP_BATCH,
) -> int | None:
    """The tile side of a patch-group lift on ``image`` ``(C, H, W)`` (or a video ``(T, C, H,
    W)`` searched in other frames as ``temporal`` says) within ``memory_gib`` (None: no budget, one
    tile), where the task holds ``buffers`` signal-sized tensors and shrinks ``batch`` groups
    at a time. Raises ``LRRError`` (parameter ``memory_gib``) when the budget cannot hold the work."""
    if memory_gib is None:
        return None
    C, H, W = image.shape[-3:]
    frames = image.shape[0] if image.ndim == 4 else 1
    span = frame_span(image)
    crop_frames = frames if span is None else min(frames, span + 2 * temporal.reach)
    size = image.element_size()
    K = group_size(group, window, search_step, temporal)
    groups = reference_count(image.shape, patch=patch, stride=stride, select=select)
    fixed = RUNTIME_GIB * 2**30 + (buffers * C * size + 3 * 4) * frames * H * W + groups * K * 4
    options = {"patch": patch, "group": group, "stride": stride, "window": window, "search_step": search_step}
    options |= {"temporal": temporal, "batch": batch}
    need = fixed + workers() * tile_memory(C, MIN_TILE_STRIDES * stride, itemsize=size, frames=crop_frames, **options)
    if need > memory_gib * 2**30:
        what = f"{frames} frames of {W}x{H}" if image.ndim == 4 else f"a {W}x{H} image"
        raise LRRError(
            f"memory_gib {memory_gib:g} is too small for {what} with these settings: "
            f"it needs at least {need / 2**30:.2f} GiB (fewer threads need less)",
            parameter="memory_gib",
        )
    crop = (crop_frames, *image.shape[-3:]) if image.ndim == 4 else image.shape
    budget = int(memory_gib * (1 - HEADROOM) * 2**30 - fixed)
    return plan_tile(crop, budget=budget, workers=workers(), itemsize=size, **options)


#: Time of shrinking groups ``batch`` at a time against 1024 (a 600x600 colour crop, 6
#: steps, two workers: 1024 24.6 s, 256 27.2 s; 512 measured between).
BATCH_COST = {GROUP_BATCH: 1.0, 512: 1.04, 256: 1.1}


def patch_plan(image: Tensor, memory_gib: float | None, **options) -> tuple[int | None, int]:
    """``(tile, batch)`` for :func:`patch_tile`'s arguments: the tile side and the groups shrunk
    at once that cost least within the budget. A tight budget (a 12 MP photo in 2 GiB
    leaves tiles of about 100 reference positions a side for batches of 1024) makes
    tiles whose crops are mostly margin: a tile reads ``window + patch`` positions beyond
    each side, so its block matching works on ``((side + 2 window + patch) / side)^2``
    times its own area (1.8x at 104, against 1.1 at 736). Smaller batches leave room for
    larger tiles; each plan is costed as that margin times :data:`BATCH_COST`."""
    margin = 2 * (options.get("temporal") or OWN_FRAME).extent(options["window"]) + options["patch"]

    def cost(plan: tuple[int | None, int]) -> float:
        tile, batch = plan
        return (1.0 if tile is None else ((tile + margin) / tile) ** 2) * BATCH_COST[batch]

    plans, refusal = [], None
    for batch in BATCH_COST:
        try:
            plans.append((patch_tile(image, memory_gib, batch=batch, **options), batch))
        except LRRError as error:  # the smallest batch needs the least: its refusal is the one said
            refusal = error
    if not plans:
        raise refusal
    return min(plans, key=cost)


#: Group-sized tensors that Adam's graph keeps for every group (gathered, centred, the
#: estimator's intermediates and their gradients).
ADAM_GROUP_COPIES = 12


def check_whole_groups(
    image: Tensor,
    memory_gib: float | None,
    *,
    solver: str,
    patch: int,
    group: int,
    stride: int,
    window: int,
    search_step: int,
    select: Tensor | None = None,
    temporal: TemporalSearch = OWN_FRAME,
) -> None:
    """Refuse (``LRRError``, parameter ``memory_gib``) a ``solver`` that holds every patch
    group of ``image`` at once when they do not fit in ``memory_gib`` (None: no budget)."""
    if memory_gib is None:
        return
    C, H, W = image.shape[-3:]
    K = group_size(group, window, search_step, temporal)
    groups = reference_count(image.shape, patch=patch, stride=stride, select=select)
    need = RUNTIME_GIB * 2**30 + groups * K * C * patch**2 * image.element_size() * ADAM_GROUP_COPIES
    if need > memory_gib * 2**30:
        raise LRRError(
            f"memory_gib {memory_gib:g} is too small for solver {solver} on a {W}x{H} image, which holds "
            f"every patch group at once (about {need / 2**30:.1f} GiB); the threshold solver works in tiles",
            parameter="memory_gib",
        )


def tile_memory(
    channels: int,
    side: int,
    *,
    patch: int,
    group: int,
    stride: int,
    window: int,
    search_step: int,
    itemsize: int,
    frames: int = 1,
    temporal: TemporalSearch = OWN_FRAME,
    batch: int = GROUP_BATCH,
) -> int:
    """Bytes one worker needs for a tile of ``side x side`` reference positions (in each of
    ``frames`` frames): the larger of finding its groups and shrinking them ``batch`` at a
    time.

    Measured by the process's peak (``VmHWM``) around finding the groups of, and one prox
    on, whole 256x256 and 512x512 images (colour K 64 and 32, grey K 48), and rounded
    up: finding, about ``100 (K + 64)`` bytes per group (the running top-K and the distances
    of a chunk of offsets; since the top-K keeps offset numbers in two reused buffers,
    ``8 (K + 256)`` bytes, so an upper bound) and 40 values per crop pixel and channel (shifted copies);
    shrinking, ``6 K D`` values per group of a batch and two ``L x D`` buffers of the crop."""
    K = group_size(group, window, search_step, temporal)
    window = temporal.extent(window)
    D = channels * patch**2
    groups = (-(-side // stride)) ** 2 * frames
    crop = (side + 2 * window + patch) ** 2 * frames
    finding = groups * 100 * (K + 64) + crop * channels * itemsize * 40
    shrinking = min(groups, batch) * 6 * K * D * itemsize + 2 * crop * D * itemsize
    return max(finding, shrinking)


#: The smallest tile, in strides.
MIN_TILE_STRIDES = 4
#: Tiles of at least this many reference positions a side are split to share the workers:
#: a crop reads ``window`` positions and a patch beyond its tile, work done twice.
SHARED_TILE = 128


def plan_tile(
    shape: tuple[int, ...],
    *,
    budget: int,
    workers: int,
    patch: int,
    group: int,
    stride: int,
    window: int,
    search_step: int,
    itemsize: int,
    temporal: TemporalSearch = OWN_FRAME,
    batch: int = GROUP_BATCH,
) -> int | None:
    """The tile side (reference positions, a multiple of ``stride``) for an image of
    ``shape`` ``(C, H, W)``: the largest whose ``workers`` tiles fit in ``budget`` bytes
    (:func:`tile_memory`), halved while the tiles do not share evenly over the workers
    and each stays at least :data:`SHARED_TILE`; None for one tile. The smallest tile is
    ``MIN_TILE_STRIDES * stride`` (:func:`tile_memory` says what it needs), taken even
    when it does not fit."""
    C, H, W = shape[-3:]
    frames = shape[0] if len(shape) == 4 else 1
    options = {"patch": patch, "group": group, "stride": stride, "window": window, "search_step": search_step}
    options |= {"frames": frames, "temporal": temporal, "batch": batch}

    def fits(side: int) -> bool:
        return workers * tile_memory(C, side, itemsize=itemsize, **options) <= budget

    whole = -(-max(H, W) // stride) * stride
    side = MIN_TILE_STRIDES * stride
    while side < whole and fits(side + stride):
        side += stride
    ny, nx = H - patch + 1, W - patch + 1

    def uneven(side: int) -> bool:
        """The busiest worker has 30 % more than its share: too few tiles, or a few unequal
        ones (a 236x316 grid in tiles of 268: 236x268 and 236x48)."""
        lengths = lambda n: [min(side, n - a) for a in range(0, n, side)]  # noqa: E731
        loads = [0] * workers
        for area in sorted((h * w for h in lengths(ny) for w in lengths(nx)), reverse=True):
            loads[loads.index(min(loads))] += area  # the next tile to the least busy worker
        return max(loads) > 1.3 * ny * nx / workers

    while uneven(side) and side // 2 >= SHARED_TILE:
        side = -(-side // 2 // stride) * stride
    return None if side >= whole else side


#: The most frames of a clip solved at once (besides the frames around them).
MAX_CHUNK_FRAMES = 24
#: The share of the budget (after the runtime) that a chunk's whole-clip buffers may take;
#: the rest is for the tiles of patch groups.
CHUNK_SHARE = 0.5


def chunk_plan(
    shape: tuple[int, int, int],
    *,
    buffers: int,
    reach: int,
    memory_gib: float | None,
    itemsize: int = 4,
    share: float = CHUNK_SHARE,
) -> tuple[int, int]:
    """``(frames, reach)``: the frames solved at once within ``memory_gib`` and the
    frames around them each way. A chunk and its ``2 reach`` frames hold ``buffers``
    float copies (and a byte copy) of each frame, within ``share`` of the budget left
    after the runtime (``CHUNK_SHARE``; a task without tiles of patch groups may take
    more); at most ``MAX_CHUNK_FRAMES``. Where the budget cannot hold the asked
    ``reach`` with at least as many frames of the chunk's own (each frame around a chunk
    is solved again as context), ``reach`` is lowered until it does (1080p colour at 2
    GiB holds 3 frames: reach 1). Raises ``LRRError`` (parameter ``memory_gib``) when
    not even one frame fits."""
    if memory_gib is None:
        return MAX_CHUNK_FRAMES, reach
    C, H, W = shape
    per_frame = (buffers * C * itemsize + C + 16) * H * W
    held = int((memory_gib - RUNTIME_GIB) * 2**30 * share // per_frame)
    if held < 1:
        need = RUNTIME_GIB + per_frame / share / 2**30
        raise LRRError(
            f"memory_gib {memory_gib:g} is too small for {W}x{H} frames: it needs at least {need:.2f} GiB",
            parameter="memory_gib",
        )
    while reach and held - 2 * reach < reach:
        reach -= 1
    return min(held - 2 * reach, MAX_CHUNK_FRAMES), reach


def frames_needed_gib(
    shape: tuple[int, int, int], *, buffers: int, frames: int, itemsize: int = 4, share: float = CHUNK_SHARE
) -> float:
    """The budget :func:`chunk_plan` needs to hold ``frames`` frames of ``shape`` at once."""
    C, H, W = shape
    return RUNTIME_GIB + frames * (buffers * C * itemsize + C + 16) * H * W / share / 2**30
