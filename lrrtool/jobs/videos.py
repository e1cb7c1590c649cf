"""Videos in, videos out: ``separate``'s streaming (decode a chunk, solve it, encode it)
and its split into segments that run as separate tasks and are joined."""

from __future__ import annotations

import functools
import itertools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from lrrtool import media
from lrrtool.errors import LRRError
from lrrtool.jobs.progress import Listener, Update, ignore, step_note
from lrrtool.jobs.runtime import peak_memory_gib, release_freed_memory
from lrrtool.solvers import Callback
from lrrtool.video import (
    MASK_BATCH,
    POOR_FIT_SPREAD,
    SeparateSettings,
    blend_frames,
    chunk_frames_for,
    separate_chunks,
)

#: The videos ``separate`` writes into its folder.
OUTPUT_VIDEOS = ("background", "foreground", "mask")
#: Their libx264 presets: the binary mask loses nothing at ``ultrafast`` (0.45 -> 0.21 s
#: for 120 720p frames).
#: The videos that show the picture, which get the input's audio.
PICTURE_OUTPUTS = {"background", "foreground"}
VIDEO_PRESETS = {"background": media.X264_PRESET, "foreground": media.X264_PRESET, "mask": "ultrafast"}


@dataclass(frozen=True)
class Clip:
    """What of a video is read: frames from ``start`` (at most ``max_frames``; None: to the
    end), resized by ``scale`` or to ``size`` (width, height), luminance only with ``grey``."""

    start: int = 0
    max_frames: int | None = None
    scale: float | None = None
    size: tuple[int, int] | None = None
    grey: bool = False


def separate_video(
    video: Path,
    folder: Path,
    settings: SeparateSettings,
    *,
    clip: Clip = Clip(),
    chunk_frames: int | None = None,
    memory_gib: float = 2.0,
    frames: bool = False,
    outputs: tuple[str, ...] = OUTPUT_VIDEOS,
    warmup: int = 0,
    lossless: tuple[str, ...] = (),
    audio: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    listener: Listener = ignore,
    task: str | None = None,
) -> dict[str, object]:
    """Separate ``video`` (a file or a folder of frames) into ``folder``/background.mp4,
    foreground.mp4 (the frames' pixels where the mask is set, black elsewhere) and mask.mp4 (those named in ``outputs``;
    PNG frames too with ``frames``), streamed in chunks sized to ``memory_gib``: decode a
    chunk, solve it (small and lifted when the frames are larger than
    ``settings.work_pixels``), encode it. ``warmup`` frames before ``start`` are solved
    first, in chunks, and not written: the background they carry into the first chunk is
    what a run from an earlier start would carry (a segment of :func:`separate_segments`).
    ``lossless``: outputs whose videos hold the frames exactly (parts that
    :func:`lrrtool.media.join_videos` encodes once). With ``audio`` the input's audio
    over the frames written is copied into the videos that show the picture
    (``PICTURE_OUTPUTS``; not the mask).
    Outputs are written atomically: a failed run leaves no partial video.
    ``listener`` is told the frames done (an :class:`~lrrtool.jobs.progress.Update` of
    ``task``, phase ``frames``) after each chunk and each solver step. Returns the report: frames,
    seconds, fps, peak memory, per-chunk entries, warnings (and ``poor_frames``, the
    frames over half foreground, for a caller that joins reports)."""
    _check_separate(video, folder, clip.max_frames, outputs)
    started = time.perf_counter()
    geometry, _, wanted, per_chunk = _frames_plan(video, settings, clip, chunk_frames, memory_gib, dtype)
    start, max_frames = clip.start, clip.max_frames
    total_chunks = None if not wanted else -(-wanted // per_chunk)
    if not 0 <= warmup <= start:
        raise LRRError(f"warmup must be in 0..start ({start}), got {warmup}")
    lookahead = blend_frames(per_chunk)
    read = functools.partial(
        media.read_video_chunks, video, chunk_frames=per_chunk, scale=clip.scale, size=clip.size, grey=clip.grey,
        raw=True, lookahead=lookahead,
    )  # fmt: skip
    warm_parts = -(-warmup // per_chunk)  # chunks solved for the background they carry, not written
    streams = [(read(start=start, max_frames=max_frames), max_frames)]
    if warmup:
        streams.insert(0, (read(start=start - warmup, max_frames=warmup), warmup))
    fps = [25.0]

    def chunks():
        for stream, limit in streams:
            left = math.inf if limit is None else limit
            for chunk, rate in stream:  # a chunk's own frames, then its look-ahead (the fade)
                fps[0] = rate
                written = min(per_chunk, chunk.shape[0], left)
                left -= written
                yield chunk, written
                del chunk  # not held while the next chunk is decoded

    writers: dict[str, media.VideoWriter] = {}
    results, total, ok, created, poor, codecs, audio_notes = [], 0, False, [], [], [], []
    total_done = [0]  # frames written, for the steps' updates
    task = task or f"separate {video.name}"
    frames_done = functools.partial(_frames_done, listener, task, started)
    frames_done(0, wanted)  # the bar's length before the first chunk
    of = f"/{total_chunks}" if total_chunks else ""

    def steps(i: int) -> Callback:
        return _chunk_steps(frames_done, f"chunk {i + 1}{of}", total_done, wanted)

    try:
        solved = separate_chunks(chunks(), settings, device=device, dtype=dtype, callbacks=steps, carry_only=warm_parts)
        for part in solved:
            if not writers:
                created = media.make_folder(folder)
                writers = {
                    n: media.VideoWriter(
                        folder / f"{n}.mp4",
                        fps[0],
                        protect=[video],
                        preset=VIDEO_PRESETS[n],
                        lossless=n in lossless,
                        comment=source_comment(video),
                    )
                    for n in outputs
                }
            write_chunk(part, writers, folder if frames else None, total)
            results.append(
                {
                    "chunk": part.index + 1 - warm_parts,
                    "frames": part.mask.shape[0],
                    "iterations": part.result.iterations,
                    "converged": part.result.converged,
                    "final": {part.result.metric: part.result.value},
                    "foreground_fraction": part.foreground_fraction,
                    "background_spread": round(part.spread, 6),
                    **({} if part.components is None else {"components": part.components}),
                }
            )
            poor += [total + t for t in part.poor_frames]
            total += part.mask.shape[0]
            del part  # before the next chunk is decoded
            release_freed_memory(memory_gib)
            total_done[0] = total
            frames_done(total, wanted)
        frames_done(total, total)  # the metadata's count can be an estimate
        media.finish_all(writers.values())  # every video checked before any is moved into place
        adders = {name: writers[name].add_audio for name in PICTURE_OUTPUTS & writers.keys()} if audio else {}
        codecs, audio_notes = carry_streams(video, adders, start=clip.start / fps[0], duration=total / fps[0])
        for writer in writers.values():
            writer.commit()
        ok = True
    finally:
        if not ok:
            for writer in writers.values():
                writer.abort()
            media.remove_empty(created)
    seconds = time.perf_counter() - started
    return {
        "input": str(video),
        "output_dir": str(folder),
        "outputs": list(outputs),
        "frames": total,
        "frame_size": list(geometry[1:][::-1]),
        "frame_rate": fps[0],
        "seconds": round(seconds, 3),
        "fps": round(total / seconds, 2) if seconds > 0 else None,
        "peak_memory_gib": peak_memory_gib(device),
        "chunks": results,
        "warnings": separate_warnings(results, poor, total) + audio_notes,
        "poor_frames": poor,
        "audio": codecs,
    }


def carry_streams(
    video: Path, adders: dict[str, Callable[..., str | None]], *, start: float, duration: float
) -> tuple[list[str], list[str]]:
    """The input's audio and subtitles put into each output by its ``adders[name]``
    (:func:`lrrtool.media.add_audio` or a writer's), the input's header read once.
    Returns the input's audio codecs and what was not kept, by output."""
    if not adders:
        return [], []
    streams = media.stream_codecs(video)
    notes = [
        f"{name}.mp4: {note}"
        for name in sorted(adders)
        if (note := adders[name](video, start=start, duration=duration, streams=streams))
    ]
    return streams["Audio"], notes


def source_comment(video: Path) -> str:
    """The tag a separation's videos carry: which input they were made from."""
    return f"lrrtool separate {Path(video).name}"


def _frames_done(listener: Listener, task: str, started: float, done: int, total: int | None, note: str = "") -> None:
    """Tell ``listener`` the frames done of ``total``, with the frame rate so far."""
    elapsed = time.perf_counter() - started
    rate = f"{done / elapsed:.1f} fps" if done and elapsed > 0 else ""
    count = f"{done}/{total if total is not None else '?'} frames"
    listener(Update(task, "frames", done, total, " ".join(x for x in (count, rate, note) if x)))


def _chunk_steps(frames_done: Callable, name: str, done: list[int], total: int | None) -> Callback:
    """A chunk's solver callback: each step is an update of the frames bar that names it."""
    return lambda step: frames_done(done[0], total, f"{name} [{step.phase}] {step_note(step)}")


def _check_separate(video: Path, folder: Path, max_frames: int | None, outputs: tuple[str, ...]) -> None:
    if folder.exists() and not folder.is_dir():
        raise LRRError(f"{folder}: exists and is not a folder")
    if not video.exists():
        raise LRRError(f"{video}: no such file or folder")
    if max_frames == 1:
        raise LRRError("max_frames 1: a background needs at least 2 frames", parameter="max_frames")
    unknown = sorted(set(outputs) - set(OUTPUT_VIDEOS))
    if unknown or not outputs:
        raise LRRError(f"outputs must be some of {', '.join(OUTPUT_VIDEOS)}, got {', '.join(outputs) or 'none'}")
    media.writable_folder(folder)


def _frames_plan(
    video: Path,
    settings: SeparateSettings,
    clip: Clip,
    chunk_frames: int | None,
    memory_gib: float,
    dtype: torch.dtype,
) -> tuple[tuple[int, int, int], int | None, int | None, int]:
    """``(geometry, available, wanted, per_chunk)`` of a separation: the frames' shape, the
    file's frame count and the frames to use from ``start`` (None: unknown), and the chunk
    length that ``memory_gib`` allows besides the decoder's staged frames."""
    geometry, available = media.video_probe(video, scale=clip.scale, size=clip.size, grey=clip.grey)
    per_chunk = chunk_frames_for(
        geometry, dtype, settings, memory_gib=memory_gib, chunk_frames=chunk_frames, staged_frames=media.STAGED_FRAMES
    )
    wanted = None if available is None else max(available - clip.start, 0)
    if clip.max_frames is not None:
        wanted = clip.max_frames if wanted is None else min(wanted, clip.max_frames)
    return geometry, available, wanted, per_chunk


#: Chunks of frames before a segment that it solves first and does not write (measured on
#: a planted clip in chunks of 15: with one, the chunk after the border lost 0.06 F against
#: the sequential run, whose background had come through every chunk before it).
WARMUP_CHUNKS = 2

#: Outputs a segmented run writes lossless and encodes once when joining them: a key frame
#: at a segment border would step a still background by about 1/255 (see
#: :func:`lrrtool.media.join_videos`). The foreground and the mask are copied: a lossless
#: foreground is large (189 MB for 600 frames at 640x360, the background's 33 MB).
SEAMLESS_OUTPUTS = ("background",)

#: ``run(jobs, work, finished)``: runs ``work(path, target)`` for every ``(path, target)``
#: of ``jobs`` somewhere (a Ray task each) and calls ``finished(index, (entry, error))``.
TaskRunner = Callable[[list[tuple[Path, Path]], Callable[[Path, Path], dict], Callable], None]


def separate_segments(
    video: Path,
    folder: Path,
    settings: SeparateSettings,
    *,
    run: TaskRunner,
    segment_frames: int | None = None,
    slots: int = 1,
    clip: Clip = Clip(),
    chunk_frames: int | None = None,
    memory_gib: float = 2.0,
    outputs: tuple[str, ...] = OUTPUT_VIDEOS,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    listener: Listener = ignore,
) -> dict[str, object]:
    """:func:`separate_video` split in time: segments of ``segment_frames`` frames (None:
    the frames shared over ``slots`` tasks, the first longer by the others' warm-up, so
    each task solves about as many frames; rounded up to whole chunks, so the chunks are
    the sequential run's) are separated independently by ``run``, each
    into a scratch folder beside ``folder``, then their videos are joined in order
    (:func:`lrrtool.media.join_videos`) into the same outputs: those of
    ``SEAMLESS_OUTPUTS`` written lossless and encoded once, so a segment border is no key
    frame; the others copied. Each segment but the first also reads ``WARMUP_CHUNKS``
    chunks of frames before its start as a warm-up, solved and not written, so the
    background it starts from is close to the one a sequential run carries, and its last
    chunk solves the look-ahead past its end as the sequential run's does (the next
    chunk's fade).
    A failed segment fails the run and leaves no output. ``listener`` is told the
    segments done (task and phase ``tasks``) as they end. Returns the report of :func:`separate_video`, the segments'
    chunks and warnings joined, plus ``segments`` (start, frames, warm-up of each) and
    ``join_seconds`` (decoding the parts and encoding the outputs)."""
    _check_separate(video, folder, clip.max_frames, outputs)
    started = time.perf_counter()
    _, available, wanted, per_chunk = _frames_plan(video, settings, clip, chunk_frames, memory_gib, dtype)
    start = clip.start
    if available is None:
        raise LRRError(f"{video}: its frame count is unknown, so it cannot be split into segments")
    if wanted < 2:
        raise LRRError(f"{video}: {wanted} frame(s) from frame {start}; a background needs at least 2")
    warm_frames = WARMUP_CHUNKS * per_chunk
    if segment_frames is not None and segment_frames < 2:
        raise LRRError(f"segment_frames must be >= 2, got {segment_frames}", parameter="segment_frames")
    # Shared over the slots, every task solves about as many frames, (wanted + warm (slots -
    # 1)) / slots, fewer than one task alone whenever a segment is longer than its warm-up:
    # the first segment has no warm-up to solve, so it takes that many more frames.
    length = segment_frames or -(-max(wanted - warm_frames, 1) // max(slots, 1))
    length = -(-length // per_chunk) * per_chunk  # whole chunks: the sequential run's chunk borders
    first_length = length if segment_frames else length + warm_frames
    bounds = [start, *range(start + first_length, start + wanted, length), start + wanted]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:  # a last segment of one frame joins the one before
        bounds.pop(-2)
    segments = [(a, b - a, min(warm_frames, a - start)) for a, b in itertools.pairwise(bounds)]
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.segments-", dir=folder.resolve().parent))
    plan = {scratch / f"{k:05d}": segment for k, segment in enumerate(segments)}

    work = functools.partial(
        _segment, plan=plan, clip=clip, settings=settings, chunk_frames=per_chunk,
        memory_gib=memory_gib, outputs=outputs, device=device, dtype=dtype,
    )  # fmt: skip

    reports: dict[int, dict] = {}
    errors: dict[int, LRRError] = {}

    def finished(k: int, outcome: tuple[dict | None, LRRError | None]) -> None:
        entry, error = outcome
        if error is not None:
            errors[k] = error
        else:
            reports[k] = entry
        listener(Update("tasks", "tasks", len(reports) + len(errors), len(segments)))

    created: list[Path] = []
    try:
        run([(video, target) for target in plan], work, finished)
        if errors:
            k = min(errors)
            first, count, _ = segments[k]
            raise LRRError(f"segment {k + 1} (frames {first}-{first + count - 1}): {errors[k]}")
        joining = time.perf_counter()
        joined = scratch / "joined"
        joined.mkdir()
        total = sum(reports[k]["frames"] for k in range(len(segments)))
        rate = reports[0]["frame_rate"]
        for name in outputs:
            parts = [target / f"{name}.mp4" for target in plan]
            preset = VIDEO_PRESETS[name] if name in SEAMLESS_OUTPUTS else None
            media.join_videos(parts, joined / f"{name}.mp4", frames=total, fps=rate, preset=preset, protect=[video])
        adders = {
            name: functools.partial(media.add_audio, joined / f"{name}.mp4") for name in PICTURE_OUTPUTS & set(outputs)
        }
        codecs, audio_notes = carry_streams(video, adders, start=segments[0][0] / rate, duration=total / rate)
        created = media.make_folder(folder)
        for name in outputs:
            os.replace(joined / f"{name}.mp4", folder / f"{name}.mp4")
        join_seconds = time.perf_counter() - joining
    except BaseException:
        media.remove_empty(created)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    chunks, poor, offset = [], [], 0
    for k in range(len(segments)):
        report = reports[k]
        chunks += [{**c, "chunk": len(chunks) + 1, "segment": k + 1} for c in report["chunks"]]
        poor += [offset + t for t in report["poor_frames"]]
        offset += report["frames"]
    seconds = time.perf_counter() - started
    peaks = [r["peak_memory_gib"] for r in reports.values() if r["peak_memory_gib"] is not None]
    return {
        **{key: reports[0][key] for key in ("input", "frame_size", "frame_rate")},
        "output_dir": str(folder),
        "outputs": list(outputs),
        "frames": offset,
        "seconds": round(seconds, 3),
        "fps": round(offset / seconds, 2) if seconds > 0 else None,
        "peak_memory_gib": max(peaks) if peaks else None,
        "chunks": chunks,
        "warnings": separate_warnings(chunks, poor, offset) + audio_notes,
        "poor_frames": poor,
        "audio": codecs,
        "segments": [{"segment": k + 1, "start": a, "frames": n, "warmup": w} for k, (a, n, w) in enumerate(segments)],
        "join_seconds": round(join_seconds, 3),
    }


def _segment(path: Path, target: Path, *, plan: dict[Path, tuple[int, int, int]], clip: Clip, **options) -> dict:
    """One segment of :func:`separate_segments` (a Ray task): its frames into ``target``."""
    first, count, warm = plan[target]
    part = replace(clip, start=first, max_frames=count)
    return separate_video(path, target, clip=part, warmup=warm, lossless=SEAMLESS_OUTPUTS, audio=False, **options)


def write_chunk(part, writers: dict[str, media.VideoWriter], png_folder: Path | None, first: int) -> None:
    """Append one solved chunk to the open ``writers`` (and PNG frames into ``png_folder``),
    ``MASK_BATCH`` frames at a time, so that no frame-sized copy of the whole chunk is
    made (a lifted background is made from its fit batch by batch)."""
    for begin in range(0, part.mask.shape[0], MASK_BATCH):
        end = begin + MASK_BATCH
        mask = part.mask[begin:end, None]
        background = part.background_frames(begin, end) if "background" in writers or png_folder else None
        if "background" in writers:
            writers["background"].append(background)
        if "foreground" in writers:
            writers["foreground"].append(part.foreground_layer(begin, end))
        if "mask" in writers:
            writers["mask"].append(mask.to(torch.uint8) * 255)
        if png_folder is not None:
            for t in range(mask.shape[0]):
                index = first + begin + t
                media.write_image(png_folder / f"background_{index:05d}.png", background[t])
                media.write_image(png_folder / f"mask_{index:05d}.png", mask[t].float())


def separate_warnings(chunks: list[dict[str, object]], poor: list[int], total: int) -> list[str]:
    """Plain-language warnings of a separation: chunks whose background is not one still
    scene (``background_spread`` above ``POOR_FIT_SPREAD``: a moving camera, a scene cut),
    frames that came out mostly foreground, and chunks whose foreground is empty or
    nearly everything."""
    warnings = []
    moving = [c["chunk"] for c in chunks if c["background_spread"] > POOR_FIT_SPREAD]
    if moving:
        worst = max(c["background_spread"] for c in chunks)
        warnings.append(
            f"the low-rank background does not fit chunk {', '.join(map(str, moving))} of {len(chunks)} "
            f"({worst:.1%} of its energy outside one still scene): a moving camera or a scene cut? "
            "The background there is unreliable; split the video at cuts, or stabilise it"
        )
    if poor:
        warnings.append(
            f"{len(poor)} of {total} frames came out over half foreground ({_spans(poor)}): a moving camera, a "
            "scene cut or a flash?"
        )
    odd = sum(not 1e-4 <= chunk["foreground_fraction"] <= 0.9 for chunk in chunks)
    if odd:
        warnings.append(f"the foreground came out empty or nearly everything in {odd} of {len(chunks)} chunks")
    return warnings


def _spans(indices: list[int], shown: int = 4) -> str:
    """``[3, 4, 5, 9]`` -> ``"frames 3-5, 9"`` (at most ``shown`` spans, then "...")."""
    spans: list[list[int]] = []
    for i in indices:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    text = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans[:shown])
    return "frames " + text + (", ..." if len(spans) > shown else "")
