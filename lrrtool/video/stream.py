"""Chunks in a stream: the background carried from chunk to chunk, the fade over each border."""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.solvers import Callback, SolveResult
from lrrtool.video.lift import LiftedSolve, separate_lifted, temporal_spread
from lrrtool.video.mask import residual_mask
from lrrtool.video.objective import MEMORY_FRAMES, SeparateSettings, separate

POOR_FIT_FRACTION = 0.5
#: A chunk whose background has more than this fraction of its energy outside its main
#: temporal component is not one still scene (measured: static real clips 3e-5 to 6e-4,
#: a 4 px/frame pan 0.030, a scene cut 0.047; a global dimming is exactly rank one).
POOR_FIT_SPREAD = 0.01


@dataclass
class SeparatedChunk:
    """One solved chunk: the input ``frames`` ``(T, C, H, W)``, its ``mask`` ``(T, H, W)``,
    the solve's ``result``, ``spread``: :func:`temporal_spread` of the solved background
    (above ``POOR_FIT_SPREAD``: not one still scene), and the background: ``solved``
    (float ``(T, C, H, W)``, plain robust PCA) or ``lifted`` (made on demand from the
    per-pixel fit, uint8); see :meth:`background_frames`."""

    index: int
    frames: Tensor
    mask: Tensor
    result: SolveResult
    spread: float = 0.0
    solved: Tensor | None = None
    lifted: LiftedSolve | None = None

    @property
    def components(self) -> int | None:
        """Temporal components of a lifted background (None for plain robust PCA)."""
        return None if self.lifted is None else self.lifted.components

    def background_frames(self, start: int = 0, stop: int | None = None) -> Tensor:
        """The background of frames ``start:stop``: float in ``[0, 1]`` (plain robust
        PCA) or uint8 (lifted)."""
        stop = self.mask.shape[0] if stop is None else min(stop, self.mask.shape[0])
        if self.lifted is not None:
            return self.lifted.background(start, stop)
        return self.solved[start:stop]

    @property
    def background(self) -> Tensor:
        """The whole chunk's background (a frame-sized copy of the chunk when lifted)."""
        return self.background_frames()

    @cached_property
    def frame_coverage(self) -> Tensor:
        """The share of each frame the mask covers, ``(T,)`` float64; counted a frame at a
        time (a count over the whole mask makes an int64 copy of it, 0.9 GB at 1080p, and
        ``count_nonzero`` along a dimension took 20x longer than once per frame)."""
        counts = torch.stack([torch.count_nonzero(frame) for frame in self.mask])
        return counts.double() / max(self.mask[0].numel(), 1)

    @property
    def foreground_fraction(self) -> float:
        return float(self.frame_coverage.mean())

    @property
    def poor_frames(self) -> list[int]:
        """Frames (within the chunk) whose mask covers more than ``POOR_FIT_FRACTION``:
        the low-rank background does not explain them (a moving camera, a scene cut)."""
        return torch.nonzero(self.frame_coverage > POOR_FIT_FRACTION).flatten().tolist()

    def foreground_layer(self, start: int = 0, stop: int | None = None) -> Tensor:
        """The foreground of frames ``start:stop`` as a layer: the frames' own pixels where
        the mask is set, 0 (black) elsewhere, in the frames' dtype: ``mask * layer +
        (1 - mask) * background`` puts the moving objects back over the background."""
        return self.frames[start:stop] * self.mask[start:stop, None]  # bool promotes: no cast of the mask


def _unit(x: Tensor) -> Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x


def separate_chunks(
    chunks: Iterable[Tensor | tuple[Tensor, int]],
    settings: SeparateSettings = SeparateSettings(),
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    callbacks: Callable[[int], Callback | None] | None = None,
    carry_only: int = 0,
) -> Iterator[SeparatedChunk]:
    """Separate a stream of chunks ``(T, C, H, W)`` (uint8 or float in ``[0, 1]``) one at
    a time, carrying ``MEMORY_FRAMES`` background frames of each chunk into the next: only
    one chunk (plus the carried frames) is held at once. Frames larger than
    ``settings.work_pixels`` are solved small and lifted (:func:`separate_lifted`).
    ``callbacks(index)`` gives the solver callback of chunk ``index`` (or None).

    A chunk given as ``(frames, written)`` has its own frames ``frames[:written]`` and a
    look-ahead ``frames[written:]``: the next chunk's first frames (or frames after the
    part wanted), solved for the fade and not returned; the next chunk's background fades
    from this solve to its own over them (:func:`fade_weights`), so a chunk border shows
    no step. A plain tensor is all its own frames.

    The first ``carry_only`` chunks (a warm-up) are solved for what they carry into the
    next only: no mask is made for them and they are not yielded."""
    memory = memory_full = fade = None
    index = -1
    for item in chunks:  # not enumerate(): its cached result tuple would hold the last chunk
        index += 1
        chunk, written = item if isinstance(item, tuple) else (item, item.shape[0])
        del item
        part, memory, memory_full, fade = _separate_chunk(
            index, chunk, written, settings, memory, memory_full, fade, device=device, dtype=dtype,
            callback=None if callbacks is None else callbacks(index), masked=index >= carry_only,
        )  # fmt: skip
        del chunk
        if index >= carry_only:
            yield part
        del part  # only the carried frames outlive a chunk: it goes before the next is decoded


def _separate_chunk(
    index: int,
    chunk: Tensor,
    written: int,
    settings: SeparateSettings,
    memory: Tensor | None,
    memory_full: Tensor | None,
    fade: Tensor | tuple[Tensor, Tensor] | None,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    callback: Callback | None,
    masked: bool = True,
) -> tuple[SeparatedChunk | None, Tensor, Tensor | None, Tensor | tuple[Tensor, Tensor] | None]:
    """One chunk of :func:`separate_chunks`: the solved chunk (its first ``written``
    frames; None when not ``masked`` and lifted: a warm-up chunk needs no mask), the
    working-size and full-size background frames it carries into the next, and the fade
    it hands over: the background of its look-ahead (robust PCA) or its fit there
    (``(rows, coefficients)``, lifted); None without a look-ahead."""
    s = settings.resolved()
    T = chunk.shape[0]
    if not 1 <= written <= T:
        raise LRRError(f"a chunk of {T} frames cannot have {written} of its own")
    rows = torch.linspace(0, written - 1, MEMORY_FRAMES).round().long().unique()
    if s.work_pixels == 0:
        frames = _unit(chunk.to(device)).to(dtype)
        bg, _, mask, result = separate(frames, settings, memory=memory, fade=fade, callback=callback)
        handover = bg[written:].clone() if written < T else None  # not a view that holds the chunk's background
        bg, frames, mask = bg[:written], frames[:written], mask[:written]
        part = SeparatedChunk(index, frames, mask, result, spread=temporal_spread(bg), solved=bg)
        return part, bg[rows.to(bg.device)], None, handover
    frames = chunk.to(device)
    lifted = separate_lifted(
        frames if frames.dtype == torch.uint8 else frames.to(dtype),
        settings,
        memory=None if memory is None else memory.to(dtype),
        memory_full=memory_full,
        callback=callback,
    )
    if fade is not None:
        lifted.fade_from(*fade)
    handover = lifted.handover(written, T) if written < T else None
    part = None
    if masked:
        frames = frames[:written]
        mask = torch.empty(written, *frames.shape[2:], dtype=torch.bool, device=frames.device)
        levels = lifted.noise_levels(frames)
        mask = residual_mask(lifted.residuals(frames), s.threshold, s.grow, levels=levels, out=mask)
        part = SeparatedChunk(index, frames, mask, lifted.result, lifted.spread, lifted=lifted)
    rows = rows.to(lifted.low_rank.device)
    carried_full = torch.cat([lifted.background(int(t), int(t) + 1) for t in rows])
    return part, lifted.low_rank[:T][rows].clamp(0, 1), carried_full, handover
