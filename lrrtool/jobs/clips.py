"""Clips in, clips out: ``inpaint`` and ``denoise`` of a video file or a folder of frames.

A clip is streamed a chunk of frames at a time (sized to the memory budget), each chunk
solved with ``reach`` frames on either side of it (the last frames of the chunk before,
the first of the chunk after: :func:`lrrtool.media.read_video_chunks`' look-ahead), so
every frame's patch groups see the frames around it as they would in one solve of the
whole clip. A video comes back as a video of the same size, rate and frame count with
the input's audio and subtitles (:func:`lrrtool.jobs.videos.carry_streams`); a folder as
a folder of lossless PNG frames named as the input's.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from lrrtool import media
from lrrtool.errors import LRRError
from lrrtool.jobs.images import Placement, solve_entry
from lrrtool.jobs.runtime import peak_memory_gib, release_freed_memory
from lrrtool.jobs.videos import carry_streams
from lrrtool.solvers import Callback, Progress, SolveResult
from lrrtool.tasks.budget import RUNTIME_GIB
from lrrtool.tasks.denoise import DENOISE_BUFFERS, DenoiseSettings, denoise, estimate_sigma
from lrrtool.tasks.inpaint import INPAINT_BUFFERS, InpaintSettings, inpaint

#: The most frames of a clip solved at once (besides the frames around them).
MAX_CHUNK_FRAMES = 24
#: The share of the budget (after the runtime) that a chunk's whole-clip buffers may take;
#: the rest is for the tiles of patch groups.
CHUNK_SHARE = 0.5


def check_clip_output(path: Path, output: Path, protect: Iterable[Path] = ()) -> Path:
    """Refuse, before any work, a clip's ``output`` (named by
    :func:`lrrtool.jobs.batch.output_path`) that is the clip or a path of ``protect`` (the
    other inputs, a mask), or of the wrong kind: a folder's output is a folder, a video's a
    video file."""
    folder = path.is_dir()
    output = Path(output)
    if any(media.same_file(output, other) for other in [path, *protect]):
        raise LRRError(f"{output}: refusing to overwrite an input; choose another output path")
    if folder:
        if output.exists() and not output.is_dir():
            raise LRRError(f"{output}: exists and is not a folder (a folder of frames gives a folder of frames)")
        media.writable_folder(output.parent)
    elif output.suffix.lower() not in media.VIDEO_SUFFIXES:
        raise LRRError(f"{output}: a video gives a video; name a video file ({', '.join(['.mp4', '.mkv', '.mov'])})")
    else:
        media.check_output(output, [path])
    return output


def chunk_plan(
    shape: tuple[int, int, int], *, buffers: int, reach: int, memory_gib: float | None, itemsize: int = 4
) -> tuple[int, int]:
    """``(frames, reach)``: the frames solved at once within ``memory_gib`` and the frames
    around them each way. A chunk and its ``2 reach`` frames hold ``buffers`` float copies
    (and a byte copy) of each frame, within ``CHUNK_SHARE`` of the budget left after the
    runtime; at most ``MAX_CHUNK_FRAMES``. Where the budget cannot hold the asked ``reach``
    with at least as many frames of the chunk's own (each frame around a chunk is solved
    again as context), ``reach`` is lowered until it does (1080p colour at 2 GiB holds 3
    frames: reach 1). Raises ``LRRError`` (parameter ``memory_gib``) when not even one
    frame fits."""
    if memory_gib is None:
        return MAX_CHUNK_FRAMES, reach
    C, H, W = shape
    per_frame = (buffers * C * itemsize + C + 16) * H * W
    held = int((memory_gib - RUNTIME_GIB) * 2**30 * CHUNK_SHARE // per_frame)
    if held < 1:
        need = RUNTIME_GIB + per_frame / CHUNK_SHARE / 2**30
        raise LRRError(
            f"memory_gib {memory_gib:g} is too small for {W}x{H} frames: it needs at least {need:.2f} GiB",
            parameter="memory_gib",
        )
    while reach and held - 2 * reach < reach:
        reach -= 1
    return min(held - 2 * reach, MAX_CHUNK_FRAMES), reach


def frames_needed_gib(shape: tuple[int, int, int], *, buffers: int, frames: int, itemsize: int = 4) -> float:
    """The budget :func:`chunk_plan` needs to hold ``frames`` frames of ``shape`` at once."""
    C, H, W = shape
    return RUNTIME_GIB + frames * (buffers * C * itemsize + C + 16) * H * W / CHUNK_SHARE / 2**30


class FrameFolder:
    """A folder of PNG frames written atomically: into a hidden folder beside ``target``,
    moved into place by :meth:`commit` (replacing an older one), removed by :meth:`abort`.
    Frame ``k`` is named after ``names[k]`` with the suffix ``.png``."""

    def __init__(self, target: Path, names: list[str]) -> None:
        self.target, self.names, self.frames = target, names, 0
        self._created = media.make_folder(target.parent)
        try:
            self._scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        except OSError as error:
            media.remove_empty(self._created)
            raise LRRError(f"{target}: cannot write ({error.strerror})") from None

    def append(self, frames: Tensor) -> None:
        for frame in frames:
            if self.frames >= len(self.names):
                raise LRRError(f"{self.target}: more frames than the input's {len(self.names)}")
            media.write_image(self._scratch / f"{Path(self.names[self.frames]).stem}.png", frame)
            self.frames += 1

    def finish(self) -> None:
        if self.frames != len(self.names):
            raise LRRError(f"{self.target}: {self.frames} frames written of {len(self.names)}")

    def commit(self) -> None:
        if self.target.exists():
            shutil.rmtree(self.target)
        os.replace(self._scratch, self.target)

    def abort(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)
        media.remove_empty(self._created)


#: ``solve(frames, mask, reach, callback)``: the restored frames ``(T, C, H, W)`` of a chunk
#: with the ``reach`` frames around it (float in ``[0, 1]``; ``mask`` bool ``(T, H, W)``,
#: ``(H, W)`` for every frame, or None) and the solve.
Solve = Callable[[Tensor, Tensor | None, int, Callback], tuple[Tensor, SolveResult]]
#: ``masks(shape, chunk_frames, reach)``: a clip's mask, read before any frame: one bool
#: ``(H, W)`` for every frame, or a stream of ``(T, H, W)`` chunks like the frames'
#: (``(C, H, W)`` frames, ``chunk_frames`` a chunk, ``reach`` frames of look-ahead).
Masks = Callable[[tuple[int, int, int], int, int], Tensor | Iterator[Tensor]]


def restore_clip(
    path: Path,
    target: Path,
    solve: Solve,
    *,
    reach: int,
    buffers: int,
    place: Placement,
    masks: Masks | None = None,
    callback: Callback | None = None,
) -> dict[str, object]:
    """Stream the clip at ``path`` through ``solve`` into ``target`` (see the module):
    chunks of :func:`chunk_plan` frames, each with the ``reach`` frames before and after it
    (fewer where the budget holds fewer, said in the entry's ``warnings``). ``masks`` gives
    the mask each chunk's ``solve`` gets (:data:`Masks`, asked once the chunks' length is
    known). ``callback`` hears the frames done (phase ``frames``).
    A clip whose first chunk is grey (its channels equal) is solved and written grey.
    Returns the report entry: frames, size, rate, time, chunks, audio, peak memory."""
    folder = path.is_dir()
    if not folder:
        media.check_constant_rate(path)
    shape, count = media.video_probe(path)
    asked = reach
    per_chunk, reach = chunk_plan(shape, buffers=buffers, reach=reach, memory_gib=place.memory_gib)
    warnings = []
    if reach < asked:
        need = frames_needed_gib(shape, buffers=buffers, frames=3 * asked)
        warnings.append(
            f"memory_gib {place.memory_gib:g} holds {per_chunk + 2 * reach} frames of {shape[2]}x{shape[1]}: "
            f"reach lowered from {asked} to {reach} (memory_gib {need:.1f} keeps {asked})"
        )
    files = media.frame_files(path) if folder else []
    names = [f.name for f in files]
    if files and (carried := media.read_image_info(files[0])[1].carried()):
        warnings.append(
            f"the frames' {', '.join(sorted(carried))} not kept: a folder's frames are read as 8-bit pixels"
        )
    stream = None if masks is None else masks(shape, per_chunk, reach)
    started = time.perf_counter()
    reader = media.read_video_chunks(path, chunk_frames=per_chunk, raw=True, lookahead=reach)
    writer, done, behind, behind_mask, grey, fps, chunks = None, 0, None, None, None, 25.0, []

    def steps(own: int) -> Callback:
        def report(step: Progress) -> None:
            if callback is not None and step.total:
                share = min((step.iteration + step.part) / step.total, 1.0)
                callback(Progress(done, count or done + own, "", math.nan, phase="frames", part=share * own))

        return report

    ok = False
    try:
        for chunk, fps in reader:
            own = min(per_chunk, chunk.shape[0])
            mask = stream if stream is None or isinstance(stream, Tensor) else _next_mask(stream, chunk.shape[0], path)
            if grey is None:
                grey = chunk.shape[1] == 3 and bool((chunk[:, :1] == chunk[:, 1:]).all())
            if grey:
                chunk = chunk[:, :1]
            first = 0 if behind is None else behind.shape[0]
            volume = chunk if behind is None else torch.cat([behind, chunk])
            if behind_mask is not None:
                mask = torch.cat([behind_mask, mask])
            frames = volume.to(place.device).to(place.dtype).div_(255)
            restored, result = solve(frames, None if mask is None else mask.to(place.device), reach, steps(own))
            if writer is None:
                writer = FrameFolder(target, names) if folder else media.VideoWriter(
                    target, fps, protect=place.protect
                )  # fmt: skip
            writer.append(restored[first : first + own])
            chunks.append({"chunk": len(chunks) + 1, "frames": own, **solve_entry(result, result.seconds)})
            kept = slice(max(first + own - reach, 0), first + own)  # copies: a view would hold the chunk
            behind = volume[kept].clone() if reach else None
            per_frame = mask is not None and mask.ndim == 3
            behind_mask = mask[kept].clone() if per_frame and reach else None
            done += own
            del volume, frames, restored, chunk
            release_freed_memory()
            if callback is not None:
                callback(Progress(done, count or done, "", math.nan, phase="frames"))
        if writer is None:
            raise LRRError(f"{path}: no frames to read")
        writer.finish()
        audio, notes = [], []
        if not folder:
            audio, notes = carry_streams(path, {"video": writer.add_audio}, start=0.0, duration=done / fps)
            notes = [n.replace("video.mp4: ", "") for n in notes]
        writer.commit()
        ok = True
    finally:
        reader.close()
        if hasattr(stream, "close"):
            stream.close()
        if not ok and writer is not None:
            writer.abort()
    seconds = time.perf_counter() - started
    return {
        "input": str(path),
        "output": str(target),
        "frames": done,
        "frame_size": [shape[2], shape[1]],
        "frame_rate": fps,
        "grey": bool(grey),
        "seconds": round(seconds, 3),
        "fps": round(done / seconds, 3) if seconds > 0 else None,
        "chunk_frames": per_chunk,
        "reach": reach,
        "chunks": chunks,
        "audio": audio,
        "peak_memory_gib": peak_memory_gib(place.device),
        **({"warnings": warnings + notes} if warnings or notes else {}),
    }


def _next_mask(masks: Iterator[Tensor], frames: int, path: Path) -> Tensor:
    mask = next(masks, None)
    if mask is None or mask.shape[0] != frames:
        raise LRRError(f"{path}: the masks end before the clip's frames do (give one mask per frame, or one image)")
    return mask


def denoise_clip(
    path: Path,
    target: Path,
    settings: DenoiseSettings,
    *,
    sigma: float | None = None,
    place: Placement = Placement(),
    callback: Callback | None = None,
) -> dict[str, object]:
    """Denoise the clip at ``path`` (``sigma`` in ``[0, 1]`` units; None: estimated on the
    first chunk) into ``target``: each chunk by :func:`lrrtool.tasks.denoise.denoise` on the
    chunk as a video, its groups searched ``reach`` frames each way."""
    reach = settings.for_video().resolved().reach
    level: list[float] = [] if sigma is None else [sigma]

    def solve(frames: Tensor, _: Tensor | None, reach: int, steps: Callback) -> tuple[Tensor, SolveResult]:
        if not level:
            level.append(estimate_sigma(frames[0]))
        return denoise(frames, level[0], replace(settings, reach=reach), memory_gib=place.memory_gib, callback=steps)

    entry = restore_clip(path, target, solve, reach=reach, buffers=DENOISE_BUFFERS, place=place, callback=callback)
    return {**entry, "sigma_255": round(level[0] * 255, 3), "sigma_estimated": sigma is None}


def mask_chunks(mask: Path, shape: tuple[int, int, int], *, chunk_frames: int, reach: int, invert: bool = False,
                resize: bool = False) -> Iterator[Tensor]:  # fmt: skip
    """A folder or video of masks as bool ``(T, H, W)`` chunks matching the clip's (white =
    fill, ``invert`` flips it; ``resize`` matches another size by nearest neighbour)."""
    _, H, W = shape
    size = (W, H) if resize else None
    for chunk, _ in media.read_video_chunks(mask, chunk_frames=chunk_frames, raw=True, lookahead=reach, grey=True,
                                            size=size):  # fmt: skip
        if chunk.shape[-2:] != (H, W):
            raise LRRError(
                f"{mask}: masks are {chunk.shape[-1]}x{chunk.shape[-2]} but the clip is {W}x{H} (width x height); "
                "pass resize_mask to resize them with nearest neighbour",
                mentions=("resize_mask",),
            )
        fill = chunk[:, 0] >= 128
        yield ~fill if invert else fill


def inpaint_clip(
    path: Path,
    target: Path,
    settings: InpaintSettings,
    *,
    mask: Path,
    invert_mask: bool = False,
    resize_mask: bool = False,
    place: Placement = Placement(),
    callback: Callback | None = None,
) -> dict[str, object]:
    """Fill the masked pixels of every frame of the clip at ``path`` into ``target``: each
    chunk by :func:`lrrtool.tasks.inpaint.inpaint` on the chunk as a video (a start from
    what the other frames show, then groups searched ``reach`` frames each way). ``mask``:
    one image for every frame, or a folder or video of masks, one per frame."""
    reach = settings.for_video().resolved().reach
    options = {"invert": invert_mask, "resize": resize_mask}

    def masks(shape: tuple[int, int, int], per_chunk: int, reach: int) -> Tensor | Iterator[Tensor]:
        if media.is_clip(mask):
            return mask_chunks(mask, shape, chunk_frames=per_chunk, reach=reach, **options)
        return media.read_mask(mask, tuple(shape[1:]), **options)

    filled = []

    def solve(frames: Tensor, fill: Tensor, reach: int, steps: Callback) -> tuple[Tensor, SolveResult]:
        fill = fill.to(frames.device)
        if not bool(fill.any()):  # nothing hidden in these frames
            return frames, SolveResult(0, "change", 0.0, True, 0.0)
        out, result = inpaint(frames, fill, replace(settings, reach=reach), memory_gib=place.memory_gib, callback=steps)
        filled.append(float(fill.float().mean()))
        return out, result

    entry = restore_clip(
        path, target, solve, reach=reach, buffers=INPAINT_BUFFERS + 1, place=place, masks=masks, callback=callback
    )
    return {**entry, "mask": str(mask), "missing_fraction": round(sum(filled) / max(len(filled), 1), 6)}
