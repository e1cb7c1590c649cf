r"""Background/foreground separation of a video, robust-PCA style.

With frames as columns (:class:`lrrtool.priors.FramesAsColumns`),
:math:`V \in \mathbb{R}^{D \times T}` (``D`` = pixels x channels),

.. math:: \min_X \; \|V - X\|_1 + \lambda'\, R(X)

``X`` is the low-rank background and ``V - X`` the sparse foreground: the forward model
is :class:`lrrtool.forward.SparseNoise`. The Gram matrix is only ``T x T``, so exact
spectra are cheap. Two solvers:

- ``threshold`` (default): :func:`lrrtool.solvers.robust_pca`, the inexact augmented
  Lagrangian method whose singular-value step is the prior's prox (``reg=nuclear`` is
  exactly PCP; other penalties reweight it, as IRNN does). The sparsity weight is robust
  PCA's :math:`w = 1/\sqrt{\max(D, T)}`, scaled by ``lam``.
- ``adam``: the EDLRR paper's route, :func:`lrrtool.solvers.adam` on
  :math:`\frac{1}{DT}\|V - X\|_1 + \lambda R(X)` with any estimator
  (:func:`default_lambda` is the same robust-PCA balance).

Long videos are solved chunk by chunk (:func:`separate_chunks`); ``memory`` (background
frames of the previous chunk) is appended as extra columns, so the background carries
across chunks, and the chunk size follows a memory budget (:func:`chunk_frames_for`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.forward import SparseNoise
from lrrtool.priors import FramesAsColumns, LowRankPrior
from lrrtool.solvers import PIXEL_BOUNDS, Callback, SolveResult, adam, robust_pca
from lrrtool.tasks.settings import TaskSettings

#: Copies of the ``D x T`` chunk each solver holds at once (for chunk sizing).
WORKING_COPIES = {"threshold": 6, "adam": 7}
#: Background frames carried from one chunk to the next.
MEMORY_FRAMES = 10
#: Frames solved at once when neither the user nor the memory budget asks for fewer.
DEFAULT_CHUNK_FRAMES = 200


@dataclass(frozen=True)
class SeparateSettings(TaskSettings):
    """``lam``: None = robust PCA's balance (see the module docstring); for ``threshold``
    a number multiplies that default, for ``adam`` it is the weight itself. ``iters``
    None: 100 (threshold, stops earlier at relative residual ``tol``) or 300 (adam).
    ``threshold`` and ``grow`` set the foreground mask (:func:`foreground_mask`)."""

    solver: str | None = None
    tol: float | None = None
    threshold: float = 4.0
    grow: float = 2.5

    defaults: ClassVar[dict[str, dict[str, object]]] = {
        "threshold": {"solver": "threshold", "reg": "nuclear", "iters": 100, "tol": 1e-5},
        "adam": {"solver": "adam", "reg": "nuclear", "iters": 300, "lr": 0.01, "estimator": "auto"},
    }
    applies_to: ClassVar[dict[str, tuple[str, ...]]] = {
        "tol": ("threshold",),
        **dict.fromkeys(("lr", "estimator"), ("adam",)),
    }
    nonnegative: ClassVar[tuple[str, ...]] = ("tol", "threshold", "grow")

    def check(self, s: dict[str, object]) -> None:
        super().check(s)
        if s["lam"] is not None and not s["lam"] > 0:
            raise LRRError(f"lam must be > 0, got {s['lam']}", parameter="lam")


def default_lambda(pixels: int, frames: int) -> float:
    """Robust PCA's ``||L||_* + ||S||_1 / sqrt(max(D, T))`` (Candès et al. 2011) rewritten for
    the mean-normalised L1 term: ``lam = sqrt(max(D, T)) / (D T)``."""
    return math.sqrt(max(pixels, frames)) / (pixels * frames)


def separate(
    frames: Tensor,
    settings: SeparateSettings = SeparateSettings(),
    *,
    memory: Tensor | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, Tensor, Tensor, SolveResult]:
    """Split ``frames`` ``(T, C, H, W)`` in ``[0, 1]`` into background, foreground, mask.

    Args:
        frames: the video chunk.
        settings: see :class:`SeparateSettings`.
        memory: optional ``(M, C, H, W)`` background frames of the previous chunk, solved
            with the chunk as extra columns (not returned).
        callback: solver progress.

    Returns:
        ``(background (T,C,H,W), foreground (T,C,H,W) = frames - background, mask (T,H,W)
        bool (see :func:`foreground_mask`), result)``.
    """
    s = settings.resolved()
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise LRRError(f"need frames of shape (T, C, H, W), got {tuple(frames.shape)}")
    T = frames.shape[0]
    stack = frames if memory is None else torch.cat([frames, memory.to(frames)])
    if stack.shape[0] < 2:
        raise LRRError("one frame cannot be separated: a background needs at least 2 frames")
    forward = SparseNoise(stack)
    prior = LowRankPrior(s.regularizer(), FramesAsColumns())
    D, columns = prior.lift.matrix_shape(stack)
    if s.solver == "threshold":
        weight = (s.lam or 1.0) / math.sqrt(max(D, columns))
        X, result = robust_pca(forward, prior, weight=weight, iters=s.iters, tol=s.tol, callback=callback)
    else:
        lam = default_lambda(D, columns) if s.lam is None else s.lam
        start = stack.median(dim=0, keepdim=True).values.expand_as(stack)
        X, result = adam(
            lambda x: forward.value(x) / (D * columns) + lam * prior.value(x), start, iters=s.iters, lr=s.lr,
            bounds=PIXEL_BOUNDS, callback=callback,
        )  # fmt: skip
    with torch.no_grad():
        bg = X[:T].clamp(0, 1)
        fg = frames - bg
        mask = foreground_mask(fg, s.threshold, s.grow)
    return bg, fg, mask, result


def foreground_mask(foreground: Tensor, threshold: float = 4.0, grow: float = 2.5, steps: int = 10) -> Tensor:
    r"""Binary mask ``(T, H, W)`` of a sparse part ``(T, C, H, W)`` by hysteresis.

    ``r`` = ``|foreground|`` maximised over channels; :math:`\hat s = 1.4826\,
    \mathrm{median}(r)` its robust standard deviation over the chunk. Pixels with
    ``r > threshold * s`` (and > 2/255) are seeds; the mask then grows ``steps`` times
    into 8-neighbours with ``r > grow * s`` (and > 1/255), as Canny's edge hysteresis does.
    """
    residual = foreground.abs().amax(dim=1)
    noise = 1.4826 * residual.median()
    mask = residual > torch.clamp(threshold * noise, min=2 / 255)
    candidates = residual > torch.clamp(grow * noise, min=1 / 255)
    for _ in range(steps):
        mask = (F.max_pool2d(mask.unsqueeze(1).to(residual.dtype), 3, 1, 1).squeeze(1) > 0) & candidates
    return mask


def chunk_frames_for(
    frame_shape: tuple[int, int, int],
    dtype: torch.dtype,
    settings: SeparateSettings,
    *,
    memory_gib: float,
    chunk_frames: int | None = None,
) -> int:
    """Frames per chunk for frames ``(C, H, W)`` of ``dtype``: ``chunk_frames`` (default
    200) or fewer, so that the solver's working copies of the chunk and the carried
    frames stay within ``memory_gib``."""
    C, H, W = frame_shape
    per_frame = C * H * W * torch.finfo(dtype).bits // 8
    budget = int(memory_gib * 2**30 // (per_frame * WORKING_COPIES[settings.choice]))
    if budget < 2 + MEMORY_FRAMES:
        raise LRRError(
            f"memory_gib {memory_gib} does not hold frames of {W}x{H}: use --scale/--size, --grey or a larger budget",
            parameter="memory_gib",
        )
    return min(chunk_frames or DEFAULT_CHUNK_FRAMES, budget - MEMORY_FRAMES)


@dataclass
class SeparatedChunk:
    """One solved chunk: ``background``, ``foreground`` ``(T, C, H, W)``, ``mask`` ``(T, H, W)``."""

    index: int
    background: Tensor
    foreground: Tensor
    mask: Tensor
    result: SolveResult

    @property
    def foreground_fraction(self) -> float:
        return float(self.mask.float().mean())


def separate_chunks(
    chunks: Iterable[Tensor],
    settings: SeparateSettings = SeparateSettings(),
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int], AbstractContextManager[Callback | None]] | None = None,
) -> Iterator[SeparatedChunk]:
    """Separate a stream of chunks ``(T, C, H, W)`` one at a time, carrying
    ``MEMORY_FRAMES`` background frames of each chunk into the next: only one chunk
    (plus the carried frames) is held at once. ``progress(index)`` gives a context
    manager around each chunk's solve that yields its callback."""
    background = None
    for index, chunk in enumerate(chunks):
        with progress(index) if progress is not None else nullcontext() as callback:
            bg, fg, mask, result = separate(chunk.to(device, dtype), settings, memory=background, callback=callback)
        background = bg[torch.linspace(0, bg.shape[0] - 1, MEMORY_FRAMES).round().long().unique()]
        yield SeparatedChunk(index, bg, fg, mask, result)
