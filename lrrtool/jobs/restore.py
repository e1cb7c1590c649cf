"""A clip streamed through a chunk solver (``inpaint`` and ``denoise`` of a video file or a
folder of frames, :mod:`lrrtool.jobs.clips`): in this process, or split in time into
segments that run as Ray tasks and are joined.

A clip is read a chunk of frames at a time (sized to the memory budget:
:func:`lrrtool.tasks.budget.chunk_plan`), each chunk solved with ``reach`` frames on
either side of it (the last frames of the chunk before, the first of the chunk after:
:func:`lrrtool.media.read_video_chunks`' look-ahead), so every frame's patch groups see
the frames around it as they would in one solve of the whole clip. A segment starts at
a chunk border and reads the ``reach`` frames before it as the run in one process has
kept them, so a segmented run solves the same chunks with the same frames around them:
its frames are those of the run in one process with chunks as long (:class:`Segments`).

A video comes back as a video of the same size, rate and frame count with the input's
audio and subtitles (:func:`lrrtool.jobs.videos.carry_streams`); a folder as a folder of
lossless PNG frames named as the input's.

Grey or colour is decided per chunk: a chunk whose frames (with the frames around it)
have three equal channels is solved as one channel, a third of the work, and written
back as three (a folder of grey image files as grey PNGs), so a clip that opens on black
frames or a grey title keeps its colour after them.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from lrrtool import media
from lrrtool.errors import LRRError
from lrrtool.jobs.images import Placement, solve_entry
from lrrtool.jobs.runtime import peak_memory_gib, release_freed_memory, trimming
from lrrtool.jobs.videos import TaskRunner, carry_streams
from lrrtool.solvers import Callback, Progress, SolveResult
from lrrtool.tasks.budget import CHUNK_SHARE, chunk_plan, frames_needed_gib

#: ``solve(frames, mask, reach, own, callback)``: the restored frames ``(T, C, H, W)`` of a
#: chunk with the ``reach`` frames around it (float in ``[0, 1]``; ``mask`` bool ``(T, H,
#: W)``, ``(H, W)`` for every frame, or None; ``own``: the chunk's own frames, the ones
#: written) and the solve.
Solve = Callable[[Tensor, Tensor | None, int, slice, Callback], tuple[Tensor, SolveResult]]
#: ``masks(shape, chunk_frames, reach, start, max_frames)``: a clip's mask: one bool ``(H,
#: W)`` for every frame, or a stream of ``(T, H, W)`` chunks like the frames' (``(C, H, W)``
#: frames, ``chunk_frames`` a chunk, ``reach`` frames of look-ahead, from frame ``start``,
#: at most ``max_frames``; None: to the end).
Masks = Callable[[tuple[int, int, int], int, int, int, int | None], Tensor | Iterator[Tensor]]


@dataclass(frozen=True)
class ClipPlan:
    """How a clip at ``path`` is streamed: its frames' ``shape`` ``(C, H, W)``, the frame
    ``count`` the probe says (None: unknown), ``chunk`` frames solved at once with ``reach``
    frames each way, a folder's frame file ``names``, ``grey_files``: a folder of grey
    image files (its first frame's), whose grey frames are written grey, and ``warnings``
    for the report."""

    path: Path
    shape: tuple[int, int, int]
    count: int | None
    chunk: int
    reach: int
    names: tuple[str, ...]
    warnings: tuple[str, ...]
    grey_files: bool = False

    @property
    def folder(self) -> bool:
        return self.path.is_dir()


def plan_clip(
    path: Path, *, reach: int, buffers: int, memory_gib: float | None, share: float = CHUNK_SHARE
) -> ClipPlan:
    """The :class:`ClipPlan` of the clip at ``path`` for a task holding ``buffers``
    float copies of each frame within ``share`` of the budget (:func:`chunk_plan`): the
    asked ``reach`` lowered where the budget cannot hold it, and said in the warnings,
    as is what a folder's frames carry that is not kept."""
    if not path.is_dir():
        media.check_constant_rate(path)
    shape, count = media.video_probe(path)
    chunk, held = chunk_plan(shape, buffers=buffers, reach=reach, memory_gib=memory_gib, share=share)
    warnings = []
    if held < reach:
        need = frames_needed_gib(shape, buffers=buffers, frames=3 * reach, share=share)
        warnings.append(
            f"memory_gib {memory_gib:g} holds {chunk + 2 * held} frames of {shape[2]}x{shape[1]}: "
            f"reach lowered from {reach} to {held} (memory_gib {need:.1f} keeps {reach})"
        )
    files = media.frame_files(path) if path.is_dir() else []
    first = media.read_image_info(files[0])[1] if files else None
    if first is not None and (carried := first.carried()):
        warnings.append(
            f"the frames' {', '.join(sorted(carried))} not kept: a folder's frames are read as 8-bit pixels"
        )
    grey_files = first is not None and not first.colour
    return ClipPlan(path, shape, count, chunk, held, tuple(f.name for f in files), tuple(warnings), grey_files)


class FrameFolder:
    """A folder of PNG frames written atomically: into a hidden folder beside ``target``,
    moved into place by :meth:`commit` (replacing an older one), removed by :meth:`abort`.
    Frame ``k`` is named after ``names[k]`` with the suffix ``.png``; :meth:`part` writes
    frames from ``first`` on into the same hidden folder (a segment's)."""

    def __init__(self, target: Path, names: tuple[str, ...]) -> None:
        self.target, self.names, self.frames = target, names, 0
        self._created = media.make_folder(target.parent)
        try:
            self.scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        except OSError as error:
            media.remove_empty(self._created)
            raise LRRError(f"{target}: cannot write ({error.strerror})") from None

    def append(self, frames: Tensor) -> None:
        write_frames(self.scratch, self.names, self.frames, frames)
        self.frames += frames.shape[0]

    def part(self, first: int) -> FramePart:
        return FramePart(self.scratch, self.names, first)

    def finish(self) -> None:
        written = sum(1 for _ in self.scratch.iterdir())
        if written != len(self.names):
            raise LRRError(f"{self.target}: {written} frames written of {len(self.names)}")

    def commit(self) -> None:
        if self.target.exists():
            shutil.rmtree(self.target)
        os.replace(self.scratch, self.target)

    def abort(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        media.remove_empty(self._created)


@dataclass
class FramePart:
    """Frames from ``first`` on written into a :class:`FrameFolder`'s hidden ``folder``."""

    folder: Path
    names: tuple[str, ...]
    first: int

    def append(self, frames: Tensor) -> None:
        write_frames(self.folder, self.names, self.first, frames)
        self.first += frames.shape[0]

    def finish(self) -> None:
        pass


def write_frames(folder: Path, names: tuple[str, ...], first: int, frames: Tensor) -> None:
    """Frames ``(T, C, H, W)`` as PNGs named after ``names[first:first + T]`` in ``folder``."""
    if first + frames.shape[0] > len(names):
        raise LRRError(f"{folder}: more frames than the input's {len(names)}")
    for k, frame in enumerate(frames):
        media.write_image(folder / f"{Path(names[first + k]).stem}.png", frame)


@dataclass
class Solved:
    """What :func:`solve_frames` did: ``frames`` written, the clip's ``fps``, whether every
    chunk was solved ``grey``, and one report entry per chunk."""

    frames: int
    fps: float
    grey: bool
    chunks: list[dict]


def is_grey(chunk: Tensor) -> bool:
    """Whether the frames ``(T, C, H, W)`` are grey: three equal channels."""
    return chunk.shape[1] == 3 and bool((chunk[:, :1] == chunk[:, 1:]).all())


def _first_chunk(path: Path, *, chunk_frames: int, lookahead: int = 0) -> Tensor:
    """The clip's first chunk of raw frames ``(T, C, H, W)``, the reader closed;
    ``LRRError`` when it has no frame."""
    try:
        return _first(media.read_video_chunks(path, chunk_frames=chunk_frames, raw=True, lookahead=lookahead))[0]
    except StopIteration:
        raise LRRError(f"{path}: no frames to read") from None


def solve_frames(
    plan: ClipPlan,
    solve: Solve,
    open_writer: Callable[[float], object],
    *,
    place: Placement,
    masks: Masks | None = None,
    first: int = 0,
    frames: int | None = None,
    callback: Callback | None = None,
) -> Solved:
    """Solve the clip's frames from ``first`` (``frames`` of them; None: to the end) chunk
    by chunk with ``solve``, appending each chunk's own frames to the writer that
    ``open_writer(fps)`` gives at the first chunk. A start after frame 0 reads the ``reach``
    frames before it as context. A chunk whose frames, with those around it, are grey is
    solved grey and written as three channels (as one for :attr:`ClipPlan.grey_files`).
    ``callback`` hears the frames done (phase ``frames``)."""
    reach = plan.reach
    back = min(reach, first)
    behind, behind_mask = None, None
    if back:
        behind = _first(media.read_video_chunks(plan.path, chunk_frames=back, start=first - back, max_frames=back,
                                                raw=True))[0]  # fmt: skip
        if masks is not None:
            context = masks(plan.shape, back, 0, first - back, back)
            behind_mask = None if isinstance(context, Tensor) else _first(context)
    stream = None if masks is None else masks(plan.shape, plan.chunk, reach, first, frames)
    reader = media.read_video_chunks(
        plan.path, chunk_frames=plan.chunk, raw=True, lookahead=reach, start=first, max_frames=frames
    )
    total = plan.count if frames is None else frames
    writer, done, fps, chunks, all_grey = None, 0, 25.0, [], True

    def steps(own: int) -> Callback:
        def report(step: Progress) -> None:
            if callback is not None and step.total:
                share = min((step.iteration + step.part) / step.total, 1.0)
                callback(Progress(done, total or done + own, "", math.nan, phase="frames", part=share * own))

        return report

    try:
        for chunk, fps in reader:
            own = min(plan.chunk, chunk.shape[0])
            mask = stream if stream is None or isinstance(stream, Tensor) else _next_mask(stream, chunk.shape[0],
                                                                                           plan.path)  # fmt: skip
            lead = 0 if behind is None else behind.shape[0]
            volume = chunk if behind is None else torch.cat([behind, chunk])
            if behind_mask is not None:
                mask = torch.cat([behind_mask, mask])
            grey = is_grey(volume)
            all_grey &= grey
            floats = (volume[:, :1] if grey else volume).to(place.device).to(place.dtype).div_(255)
            restored, result = solve(floats, None if mask is None else mask.to(place.device), reach,
                                     slice(lead, lead + own), trimming(steps(own), place.memory_gib))  # fmt: skip
            if writer is None:
                writer = open_writer(fps)
            own_frames = restored[lead : lead + own]
            writer.append(own_frames if plan.grey_files else own_frames.expand(-1, volume.shape[1], -1, -1))
            chunks.append({"chunk": len(chunks) + 1, "frames": own, **solve_entry(result, result.seconds)})
            kept = slice(max(lead + own - reach, 0), lead + own)  # copies: a view would hold the chunk
            behind = volume[kept].clone() if reach else None
            per_frame = mask is not None and mask.ndim == 3
            behind_mask = mask[kept].clone() if per_frame and reach else None
            done += own
            del volume, floats, restored, chunk
            release_freed_memory(place.memory_gib)
            if callback is not None:
                callback(Progress(done, total or done, "", math.nan, phase="frames"))
    finally:
        reader.close()
        if hasattr(stream, "close"):
            stream.close()
    if writer is None:
        raise LRRError(f"{plan.path}: no frames to read" + (f" from frame {first}" if first else ""))
    return Solved(done, fps, all_grey, chunks)


def _first(chunks: Iterator):
    """The first item of a stream of chunks, the stream closed (its reader with it)."""
    try:
        return next(chunks)
    finally:
        chunks.close()


def _next_mask(masks: Iterator[Tensor], frames: int, path: Path) -> Tensor:
    mask = next(masks, None)
    if mask is None or mask.shape[0] != frames:
        raise LRRError(f"{path}: the masks end before the clip's frames do (give one mask per frame, or one image)")
    return mask


def restore_clip(
    path: Path,
    target: Path,
    solve: Solve,
    *,
    reach: int,
    buffers: int,
    place: Placement,
    share: float = CHUNK_SHARE,
    masks: Masks | None = None,
    callback: Callback | None = None,
) -> dict[str, object]:
    """Stream the clip at ``path`` through ``solve`` into ``target`` in this process
    (see the module): chunks of :func:`chunk_plan` frames, each with the ``reach``
    frames before and after it (fewer where the budget holds fewer, said in the entry's
    ``warnings``); ``masks`` gives each chunk's mask. ``callback`` hears the frames done
    (phase ``frames``). Grey chunks are solved grey (see the module). Returns the report
    entry: frames, size, rate, time, chunks, audio, peak memory."""
    plan = plan_clip(path, reach=reach, buffers=buffers, memory_gib=place.memory_gib, share=share)
    started = time.perf_counter()
    opened = []

    def open_writer(fps: float):
        if plan.folder:
            writer = FrameFolder(target, plan.names)
        else:
            writer = media.VideoWriter(target, fps, protect=place.protect)
        opened.append(writer)
        return writer

    ok = False
    try:
        solved = solve_frames(plan, solve, open_writer, place=place, masks=masks, callback=callback)
        writer = opened[0]
        writer.finish()
        audio, notes = [], []
        if not plan.folder:
            duration = solved.frames / solved.fps
            audio, notes = carry_streams(path, {"video": writer.add_audio}, start=0.0, duration=duration)
        writer.commit()
        ok = True
    finally:
        if not ok and opened:
            opened[0].abort()
    return _entry(plan, target, solved, started, audio, notes, peak_memory_gib(place.device))


def _entry(plan: ClipPlan, target: Path, solved: Solved, started: float, audio: list[str], notes: list[str],
           peak: float | None, **extra) -> dict[str, object]:  # fmt: skip
    """A clip's report entry."""
    seconds = time.perf_counter() - started
    warnings = list(plan.warnings) + [n.replace("video.mp4: ", "") for n in notes]
    return {
        "input": str(plan.path),
        "output": str(target),
        "frames": solved.frames,
        "frame_size": [plan.shape[2], plan.shape[1]],
        "frame_rate": solved.fps,
        "grey": solved.grey,
        "seconds": round(seconds, 3),
        "fps": round(solved.frames / seconds, 3) if seconds > 0 else None,
        "chunk_frames": plan.chunk,
        "reach": plan.reach,
        "chunks": solved.chunks,
        "audio": audio,
        "peak_memory_gib": peak,
        **extra,
        **({"warnings": warnings} if warnings else {}),
    }


@dataclass(frozen=True)
class Segments:
    """A clip split in time, each segment run by ``run`` (:data:`lrrtool.jobs.videos.TaskRunner`:
    a Ray task each): into segments of ``frames`` frames, rounded up to whole chunks (the
    frames of the run in one process), or else into ``slots`` segments of as many chunks,
    the chunks shortened to share the frames evenly (those of a run in one process with
    chunks that long)."""

    run: TaskRunner
    slots: int = 1
    frames: int | None = None


def restore_segments(
    path: Path,
    target: Path,
    solve: Solve,
    segments: Segments,
    *,
    reach: int,
    buffers: int,
    place: Placement,
    share: float = CHUNK_SHARE,
    masks: Masks | None = None,
    prepare: Callable[[Tensor], None] | None = None,
    callback: Callback | None = None,
) -> dict[str, object]:
    """:func:`restore_clip` split in time (see the module): the clip's frames shared
    over ``segments``, each a whole number of chunks, solved as tasks into a scratch
    folder beside ``target`` (a video's parts lossless, encoded once when joined, so a
    border is no key frame; a folder's frames into one hidden folder), then joined and
    moved into place. What the run in one process decides on its first chunk is decided
    here before the tasks start: ``prepare(frames)`` (a level estimated on the first
    chunk: ``(T, C, H, W)`` float ``[0, 1]`` on ``place``'s device, grey when it is). A
    failed segment fails the clip and leaves no output. ``callback`` hears the frames of
    each finished segment (phase ``frames``). Returns :func:`restore_clip`'s entry plus
    ``segments`` (start and frames of each)."""
    plan = plan_clip(path, reach=reach, buffers=buffers, memory_gib=place.memory_gib, share=share)
    if plan.count is None:
        raise LRRError(f"{path}: its frame count is unknown, so it cannot be split into segments")
    started = time.perf_counter()
    if segments.frames is not None:  # whole chunks: the borders of the run in one process
        length = -(-segments.frames // plan.chunk) * plan.chunk
    else:  # as many chunks a slot, made even: 50 frames in chunks of 24 on 2 slots, 2 x 2 chunks of 13
        slots = max(segments.slots, 1)
        per_slot = -(-plan.count // (slots * plan.chunk))
        plan = replace(plan, chunk=-(-plan.count // (slots * per_slot)))
        length = per_slot * plan.chunk
    head = _first_chunk(path, chunk_frames=plan.chunk, lookahead=plan.reach)  # as the run in one process reads it
    if prepare is not None:
        prepare((head[:, :1] if is_grey(head) else head).to(place.device).to(place.dtype).div_(255))
    del head
    starts = list(range(0, plan.count, length))
    spans = [(a, min(a + length, plan.count) - a) for a in starts]
    folder = FrameFolder(target, plan.names) if plan.folder else None
    scratch = folder.scratch if folder else Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    parts = {scratch / f"part-{k:05d}.mp4": span for k, span in enumerate(spans)}
    work = functools.partial(
        _segment, plan=plan, solve=solve, parts=parts, place=place, masks=masks, folder=folder,
    )  # fmt: skip
    reports: dict[int, dict] = {}
    errors: dict[int, LRRError] = {}
    order = list(parts)

    def finished(k: int, outcome: tuple[dict | None, LRRError | None]) -> None:
        entry, error = outcome
        if error is not None:
            errors[k] = error
            return
        reports[k] = entry
        if callback is not None:
            done = sum(r["frames"] for r in reports.values())
            callback(Progress(done, plan.count, "", math.nan, phase="frames"))

    ok = False
    try:
        segments.run([(path, part) for part in order], work, finished)
        if errors:
            k = min(errors)
            first, count = spans[k]
            raise LRRError(f"segment {k + 1} (frames {first}-{first + count - 1}): {errors[k]}")
        frames, grey = sum(r["frames"] for r in reports.values()), all(r["grey"] for r in reports.values())
        solved = Solved(frames, reports[0]["fps"], grey, [])
        for k in range(len(spans)):
            solved.chunks += [{**c, "chunk": len(solved.chunks) + 1, "segment": k + 1} for c in reports[k]["chunks"]]
        audio, notes = [], []
        if folder is not None:
            folder.finish()
            folder.commit()
        else:
            joined = scratch / "joined.mp4"
            media.join_videos(order, joined, frames=solved.frames, fps=solved.fps, preset=media.X264_PRESET,
                              protect=[path])  # fmt: skip
            adders = {"video": functools.partial(media.add_audio, joined)}
            audio, notes = carry_streams(path, adders, start=0.0, duration=solved.frames / solved.fps)
            media.check_output(target, [path, *place.protect])
            os.replace(joined, target)
        ok = True
    finally:
        if folder is not None and not ok:
            folder.abort()
        if folder is None:
            shutil.rmtree(scratch, ignore_errors=True)
    peaks = [r["peak_memory_gib"] for r in reports.values() if r["peak_memory_gib"] is not None]
    return _entry(
        plan, target, solved, started, audio, notes, max(peaks) if peaks else None,
        segments=[{"segment": k + 1, "start": a, "frames": n} for k, (a, n) in enumerate(spans)],
    )  # fmt: skip


def _segment(path: Path, part: Path, *, plan: ClipPlan, solve: Solve, parts: dict[Path, tuple[int, int]],
             place: Placement, masks: Masks | None, folder: FrameFolder | None) -> dict:  # fmt: skip
    """One segment of :func:`restore_segments` (a task): its frames into ``part`` (a
    lossless video), or into the frame folder's hidden folder."""
    first, count = parts[part]
    writers = []

    def open_writer(fps: float):
        if folder is not None:
            writer = folder.part(first)
        else:
            writer = media.VideoWriter(part, fps, lossless=True, protect=[path])
        writers.append(writer)
        return writer

    solved = solve_frames(plan, solve, open_writer, place=place, masks=masks, first=first, frames=count)
    writers[0].finish()
    if folder is None:
        writers[0].commit()
    return {"frames": solved.frames, "fps": solved.fps, "chunks": solved.chunks, "grey": solved.grey,
            "peak_memory_gib": peak_memory_gib(place.device)}  # fmt: skip
