"""Clips in, clips out: ``inpaint`` and ``denoise`` of a video file or a folder of frames,
streamed a chunk of frames at a time by :mod:`lrrtool.jobs.restore` (in this process, or
in segments on Ray tasks)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from torch import Tensor

from lrrtool import media
from lrrtool.errors import LRRError
from lrrtool.jobs.images import Placement
from lrrtool.jobs.restore import Segments, restore_clip, restore_segments
from lrrtool.solvers import Callback, SolveResult
from lrrtool.tasks.denoise import DENOISE_BUFFERS, DenoiseSettings, denoise, estimate_clip_sigma
from lrrtool.tasks.inpaint import INPAINT_BUFFERS, START_BUFFERS, START_SHARE, InpaintSettings, inpaint, keeps_start


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


def denoise_clip(
    path: Path,
    target: Path,
    settings: DenoiseSettings,
    *,
    sigma: float | None = None,
    place: Placement = Placement(),
    callback: Callback | None = None,
    segments: Segments | None = None,
) -> dict[str, object]:
    """Denoise the clip at ``path`` (``sigma`` in ``[0, 1]`` units; None: estimated on
    the first chunk, :func:`lrrtool.tasks.denoise.estimate_clip_sigma`) into ``target``:
    each chunk by :func:`lrrtool.tasks.denoise.denoise` on the chunk as a video, its
    groups searched ``reach`` frames each way; with ``segments``, in segments
    (:func:`lrrtool.jobs.restore.restore_segments`)."""
    reach = settings.for_video().resolved().reach  # grey and colour clips share it: no frame read to plan
    level: list[float] = [] if sigma is None else [sigma]

    def estimate(frames: Tensor) -> None:
        if not level:
            level.append(estimate_clip_sigma(frames))

    def solve(frames: Tensor, _: Tensor | None, reach: int, own: slice, steps: Callback) -> tuple[Tensor, SolveResult]:
        estimate(frames)
        return denoise(frames, level[0], replace(settings, reach=reach), memory_gib=place.memory_gib, callback=steps)

    options = {"reach": reach, "buffers": DENOISE_BUFFERS, "place": place, "callback": callback}
    if segments is None:
        entry = restore_clip(path, target, solve, **options)
    else:
        entry = restore_segments(path, target, solve, segments, prepare=estimate, **options)
    return {**entry, "sigma_255": round(level[0] * 255, 3), "sigma_estimated": sigma is None}


def mask_chunks(
    mask: Path,
    shape: tuple[int, int, int],
    *,
    chunk_frames: int,
    reach: int,
    start: int = 0,
    max_frames: int | None = None,
    invert: bool = False,
    resize: bool = False,
) -> Iterator[Tensor]:
    """A folder or video of masks as bool ``(T, H, W)`` chunks matching the clip's (white =
    fill, ``invert`` flips it; ``resize`` matches another size by nearest neighbour), from
    mask ``start`` (at most ``max_frames``, and ``reach`` more as look-ahead)."""
    _, H, W = shape
    size = (W, H) if resize else None
    for chunk, _ in media.read_video_chunks(mask, chunk_frames=chunk_frames, raw=True, lookahead=reach, grey=True,
                                            size=size, start=start, max_frames=max_frames):  # fmt: skip
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
    segments: Segments | None = None,
) -> dict[str, object]:
    """Fill the masked pixels of every frame of the clip at ``path`` into ``target``: each
    chunk by :func:`lrrtool.tasks.inpaint.inpaint` on the chunk as a video (a start from
    what the other frames show, then groups searched ``reach`` frames each way); with
    ``segments``, in segments. ``mask``: one image for every frame, or a folder or video of
    masks, one per frame."""
    reach = settings.for_video().resolved().reach
    options = {"invert": invert_mask, "resize": resize_mask}

    def masks(shape: tuple[int, int, int], per_chunk: int, reach: int, start: int,
              max_frames: int | None) -> Tensor | Iterator[Tensor]:  # fmt: skip
        if media.is_clip(mask):
            return mask_chunks(mask, shape, chunk_frames=per_chunk, reach=reach, start=start, max_frames=max_frames,
                               **options)  # fmt: skip
        return media.read_mask(mask, tuple(shape[1:]), **options)

    def solve(frames: Tensor, fill: Tensor, reach: int, own: slice, steps: Callback) -> tuple[Tensor, SolveResult]:
        fill = fill.to(frames.device)
        if not bool(fill.any()):  # nothing hidden in these frames
            return frames, SolveResult(0, "change", 0.0, True, 0.0)
        out, result = inpaint(frames, fill, replace(settings, reach=reach), memory_gib=place.memory_gib, own=own,
                              callback=steps)  # fmt: skip
        result.details["missing_fraction"] = round(float(fill.float().mean()), 6)
        return out, result

    cost = {"buffers": INPAINT_BUFFERS + 1}
    if not media.is_clip(mask):  # one mask: whether the start is kept decides the chunks' size
        shape, _ = media.video_probe(path)
        if keeps_start(media.read_mask(mask, tuple(shape[1:]), **options), settings):
            cost = {"buffers": START_BUFFERS, "share": START_SHARE}
    common = {"reach": reach, **cost, "place": place, "masks": masks, "callback": callback}
    if segments is None:
        entry = restore_clip(path, target, solve, **common)
    else:
        entry = restore_segments(path, target, solve, segments, **common)
    filled = [c["missing_fraction"] for c in entry["chunks"] if "missing_fraction" in c]
    return {**entry, "mask": str(mask), "missing_fraction": round(sum(filled) / max(len(filled), 1), 6)}
