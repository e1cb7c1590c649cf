"""Videos and folders of frames, read: in chunks ``(T, C, H, W)``, probed (size, frame
count, frame times, streams) through ffmpeg."""

from __future__ import annotations

import functools
import itertools
import logging
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lrrtool.errors import LRRError
from lrrtool.media.files import IMAGE_SUFFIXES, error_summary
from lrrtool.media.images import SIXTEEN_BIT_MODES, open_image


class _KnownRotation(logging.Filter):
    """Drops imageio-ffmpeg's note that a rotated clip's frames differ in size from its
    stored ones: ffmpeg turns the frames upright as it decodes, and the probe
    (:func:`video_probe`) takes the upright size, so the outputs are upright."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_KnownRotation())


def _frame_uint8(frame: np.ndarray, size: tuple[int, int] | None, grey: bool) -> np.ndarray:
    """One decoded frame ``(H, W[, C])`` uint8 as ``(H, W, C)`` uint8 (the frame itself when
    nothing changes), resized (bilinear) to ``size`` and made grey (ITU-R 601 luma) when
    asked."""
    height, width = frame.shape[:2]
    if frame.ndim == 3 and not grey and (size is None or size == (width, height)):
        return frame[:, :, :3]
    image = Image.fromarray(frame[:, :, :3] if frame.ndim == 3 else frame)
    if size is not None and image.size != size:
        image = image.resize(size, Image.BILINEAR)
    array = np.asarray(image.convert("L" if grey else "RGB"))
    return array[:, :, None] if array.ndim == 2 else array


def _folder_frame(path: Path, size: tuple[int, int]) -> np.ndarray:
    """One image of a frame folder as uint8 ``(H, W, 3)``. 16-bit grey is scaled to 8 bits
    (PIL's own conversion clips it at 255); a frame of another ``size`` than the first is
    an error, never resized silently."""
    image = open_image(path)
    if image.size != size:
        raise LRRError(
            f"{path}: the frame is {image.size[0]}x{image.size[1]} but the first one is {size[0]}x{size[1]}; "
            "every frame of a folder must have one size"
        )
    if image.mode in SIXTEEN_BIT_MODES:
        grey = np.clip(np.round(np.asarray(image).astype(np.float64) / 257), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _target_size(width: int, height: int, scale: float | None, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        return size
    if scale is None:
        return width, height
    if not 0 < scale <= 1:
        raise LRRError(f"scale must be in (0, 1], got {scale}", parameter="scale")
    return max(1, round(width * scale)), max(1, round(height * scale))


def read_video_chunks(
    path: str | Path,
    *,
    chunk_frames: int,
    start: int = 0,
    max_frames: int | None = None,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    grey: bool = False,
    raw: bool = False,
    lookahead: int = 0,
):
    """Stream a video (or a folder of images, in name order) as ``(T, C, H, W)`` chunks.

    Yields ``(chunk, fps)``; at most ``chunk_frames + lookahead`` decoded frames are held
    at once. Chunks are float32 in ``[0, 1]``, or the decoded uint8 values with ``raw`` (a
    quarter of the memory). With ``lookahead``, chunk ``k`` holds frames
    ``k * chunk_frames`` to ``(k + 1) * chunk_frames + lookahead`` (the next chunk's first
    frames too, decoded once and copied), and the frames read run ``lookahead`` past
    ``max_frames`` where the file has them; a chunk starts at every ``chunk_frames``-th
    frame before ``max_frames`` (or the file's end).
    """
    path = Path(path)
    planar = False
    if _existing_is_folder(path):
        files = frame_files(path)
        first = open_image(files[0])
        target = _target_size(*first.size, scale, size)
        frames = (_folder_frame(f, first.size) for f in files)
        fps = 25.0
    else:
        planar = scale is None and size is None and not grey  # frames as they decode: planes, no transpose
        meta, frames, planar = _open_video(path, planar)
        fps = float(meta.get("fps") or (meta.get("duration") and 1000 / meta["duration"]) or 25.0)
        width, height = meta.get("size") or meta.get("source_size") or (0, 0)
        target = _target_size(width, height, scale, size) if width else size
    held = chunk_frames + lookahead
    limit = None if max_frames is None else max_frames + lookahead
    chunk, staged, filled, waiting, count, carried = None, None, 0, 0, 0, None
    for index, frame in enumerate(frames):
        if index < start:
            continue
        if limit is not None and count >= limit:
            break
        array = frame if planar else _frame_uint8(frame, target, grey)
        if chunk is None:  # filled in place: no second copy of the chunk while stacking
            shape = array.shape if planar else (array.shape[2], *array.shape[:2])
            chunk = torch.empty((held, *shape), dtype=torch.uint8)
            if carried is not None:
                filled = carried.shape[0]
                chunk[:filled] = carried
                carried = None
        if planar:
            _put_planes(chunk, filled, array)
        else:
            if staged is None:
                staged = np.empty((STAGED_FRAMES, *array.shape), dtype=np.uint8)
            staged[waiting] = array
            waiting += 1
        filled += 1
        count += 1
        if waiting and (waiting == STAGED_FRAMES or filled == held):
            _unstage(chunk, staged, filled, waiting)
            waiting = 0
        if filled == held:
            yield _chunk(chunk, raw), fps
            # The look-ahead is copied once the consumer has let the chunk go, so the copy
            # does not sit beside its solve.
            carried = chunk[chunk_frames:].clone() if lookahead else None
            chunk, filled = None, 0
    if chunk is not None:
        if waiting:
            _unstage(chunk, staged, filled, waiting)
        tail = chunk[:filled]
    else:
        tail = carried  # the file ended on a chunk's look-ahead (or exactly on a chunk)
    # What is left holds fewer than chunk_frames + lookahead frames; a chunk starts at each
    # chunk_frames-th of them that comes before the end: one more when it holds over chunk_frames.
    first = count - (0 if tail is None else tail.shape[0])
    end = count if max_frames is None else min(max_frames, count)
    while tail is not None and first < end:
        yield _chunk(tail, raw), fps
        tail = tail[chunk_frames:].clone() if tail.shape[0] > chunk_frames else None
        first += chunk_frames
    if count == 0:
        raise LRRError(f"{path}: no frames to process (start={start}, frames in file may be fewer)")


#: Decoded frames gathered as ffmpeg gives them, ``(H, W, C)``, then moved into the
#: chunk's ``(C, H, W)`` layout by one torch copy: a strided copy per frame cost 0.78 s
#: of the reading thread for 120 720p frames, this about 0.12 s. Where nothing is resized
#: or made grey, ffmpeg gives planes instead (:func:`_open_video`), and no transpose is made.
STAGED_FRAMES = 8


def _unstage(chunk: torch.Tensor, staged: np.ndarray, filled: int, waiting: int) -> None:
    """Move the ``waiting`` staged frames that end at frame ``filled`` into ``chunk``."""
    chunk[filled - waiting : filled].copy_(torch.from_numpy(staged[:waiting]).permute(0, 3, 1, 2))


#: ffmpeg's planar RGB (``gbrp``) holds the planes G, B, R: the RGB channel of each plane
#: (read into chunks here, written by :class:`lrrtool.media.VideoWriter`).
GBRP_CHANNELS = (1, 2, 0)


def _put_planes(chunk: torch.Tensor, index: int, planes: np.ndarray) -> None:
    """Copy ffmpeg's ``gbrp`` planes ``(3, H, W)`` into frame ``index`` of ``chunk`` as R, G, B."""
    frame = chunk[index].numpy()
    for plane, channel in enumerate(GBRP_CHANNELS):
        frame[channel] = planes[plane]


def _chunk(frames: torch.Tensor, raw: bool) -> torch.Tensor:
    return frames if raw else frames.float().div_(255)


def _existing_is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of frames (False: a video file); missing is an error."""
    if not path.exists():
        raise LRRError(f"{path}: no such file or folder")
    return path.is_dir()


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder, in name order; none is an error."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LRRError(f"{folder}: the folder holds no image files")
    return files


def _video_reader(path: Path):
    """imageio's reader of a video file, giving the file's own frames: ffmpeg's default
    output rate duplicates frames of a variable-rate file (OpenCV's ``tree.avi``: 449
    frames decoded from 68), so the rate is passed through."""
    import imageio.v2 as imageio

    if path.suffix.lower() == ".gif":
        return imageio.get_reader(path)
    return imageio.get_reader(path, format="ffmpeg", output_params=PASSTHROUGH)


#: ffmpeg's output options that keep a file's own frames (see :func:`_video_reader`).
PASSTHROUGH = ["-fps_mode", "passthrough"]


def _open_video(path: Path, planar: bool) -> tuple[dict, Iterator[np.ndarray], bool]:
    """``(metadata, frames, planar)`` of a video file: its frames as uint8 ``(H, W, C)``,
    or with ``planar`` as ffmpeg's ``gbrp`` planes ``(3, H, W)`` (G, B, R: the chunk's
    layout without a transpose, :func:`_put_planes`). A GIF is read by Pillow, never
    planar. Unreadable input is an ``LRRError``."""
    try:
        if path.suffix.lower() == ".gif":
            reader = _video_reader(path)
            return reader.get_meta_data(), _safe_frames(reader, path), False
        import imageio_ffmpeg

        pixels = "gbrp" if planar else "rgb24"
        decoded = imageio_ffmpeg.read_frames(str(path), pix_fmt=pixels, output_params=PASSTHROUGH)
        meta = next(decoded)
    except Exception as error:  # imageio raises many types for unreadable input
        raise LRRError(f"{path}: not a readable video ({error_summary(error)})") from None
    width, height = meta["size"]
    return meta, _safe_frames(_arrays(decoded, (3, height, width) if planar else (height, width, 3)), path), planar


def _arrays(decoded: Iterator[bytes], shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    """ffmpeg's raw frames as read-only uint8 arrays of ``shape`` (no copy)."""
    try:
        for frame in decoded:
            yield np.frombuffer(frame, dtype=np.uint8).reshape(shape)
    finally:
        decoded.close()


def video_probe(
    path: str | Path, *, scale: float | None = None, size: tuple[int, int] | None = None, grey: bool = False
) -> tuple[tuple[int, int, int], int | None]:
    """``((C, H, W), frames)``: the shape of the frames :func:`read_video_chunks` yields and
    the frame count (None when unknown), from one look at the file's metadata (or the
    folder's first image). The count is the container's, or duration x rate, which
    over-counts a variable-rate file; it sizes progress, not the work. A file whose
    metadata gives no size has one frame decoded."""
    path = Path(path)
    channels = 1 if grey else 3
    if _existing_is_folder(path):
        files = frame_files(path)
        width, height = _target_size(*open_image(files[0]).size, scale, size)
        return (channels, height, width), len(files)
    stat = path.stat()  # the same file probed again (planning, then the job) is read once
    return _probe_file(path.resolve(), stat.st_mtime_ns, stat.st_size, scale, size, grey)


@functools.lru_cache(maxsize=16)
def _probe_file(
    path: Path, mtime_ns: int, length: int, scale: float | None, size: tuple[int, int] | None, grey: bool
) -> tuple[tuple[int, int, int], int | None]:
    """:func:`video_probe` of a video file as it was at ``mtime_ns`` and ``length`` bytes:
    from ffmpeg's reading of its header (:func:`_header_meta`, 0.05 s), or where that
    says too little, from a reader's first frame (0.2-0.3 s at 720p-1080p)."""
    channels = 1 if grey else 3
    meta = None if path.suffix.lower() == ".gif" else _header_meta(path)
    if meta is None:
        try:
            reader = _video_reader(path)
            meta = reader.get_meta_data()
            reader.close()
        except Exception as error:  # imageio raises many types for unreadable input
            raise LRRError(f"{path}: not a readable video ({error_summary(error)})") from None
    count = None
    frames = meta.get("nframes")
    if isinstance(frames, (int, float)) and 0 < frames < float("inf"):
        count = int(frames)
    elif meta.get("duration") and meta.get("fps"):
        count = round(meta["duration"] * meta["fps"])
    source = meta.get("size") or meta.get("source_size")
    if not source or not all(source):
        chunks = read_video_chunks(path, chunk_frames=1, max_frames=1, scale=scale, size=size, grey=grey, raw=True)
        try:
            first, _ = next(chunks)
        finally:
            chunks.close()
        return tuple(first.shape[1:]), count
    width, height = _target_size(*source, scale, size)
    return (channels, height, width), count


def _header_meta(path: Path) -> dict | None:
    """``{"size", "fps", "duration"}`` of a video file's first video stream from ffmpeg's
    reading of its header, the size upright as ffmpeg decodes it (a display rotation of
    90 or 270 degrees swaps the sides); None where the header names no size or rate."""
    lines = _header(path)
    first = next((i for i, line in enumerate(lines) if "Stream #" in line and ": Video:" in line), None)
    if first is None:
        return None
    stream = lines[first]
    size = re.search(r", (\d+)x(\d+)[ ,]", stream)
    rate = re.search(r", ([\d.]+) fps", stream) or re.search(r", ([\d.]+) tbr", stream)
    if size is None or rate is None:
        return None
    width, height = int(size[1]), int(size[2])
    for line in itertools.takewhile(lambda line: "Stream #" not in line, lines[first + 1 :]):
        rotation = re.search(r"rotation of (-?[\d.]+) degrees", line)
        if rotation and round(float(rotation[1])) % 180 == 90:
            width, height = height, width
    return {"size": (width, height), "fps": float(rate[1]), "duration": video_duration(path, lines)}


def _safe_frames(reader, path: Path):
    try:
        yield from reader
    except (RuntimeError, OSError, ValueError) as error:
        raise LRRError(f"{path}: cannot decode the video ({error_summary(error)})") from None
    finally:
        reader.close()


def run_ffmpeg(*arguments: str) -> subprocess.CompletedProcess:
    import imageio_ffmpeg

    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), *arguments], capture_output=True, text=True)


#: Largest ratio of the longest to the shortest frame interval of a constant-rate clip
#: (timestamps rounded to the time base stay far below it; 30/10 fps switches are 3).
CONSTANT_RATE_SPREAD = 1.5


def frame_intervals(source: Path) -> tuple[float, float] | None:
    """The shortest and longest interval (seconds) between the presentation times of the
    first video stream's frames of the file ``source``, read from its packets without
    decoding (None for a folder of frames, or fewer than three frames)."""
    if not Path(source).is_file():
        return None
    listing = run_ffmpeg("-hide_banner", "-loglevel", "error", "-i", str(source), "-map", "0:v:0", "-c", "copy",
                      "-f", "framemd5", "-")  # fmt: skip
    base, times = None, []
    for line in listing.stdout.splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            base = int(num) / int(den)
        elif line and not line.startswith("#"):
            times.append(int(line.split(",")[2]))
    if base is None or len(times) < 3:
        return None
    steps = [b - a for a, b in itertools.pairwise(sorted(times)) if b > a]
    return (min(steps) * base, max(steps) * base) if steps else None


def check_constant_rate(source: Path) -> None:
    """Refuse a variable-frame-rate clip: lrrtool writes constant-rate video, and its
    frames at one rate would change the speed of the motion where the rate changes."""
    intervals = frame_intervals(source)
    if intervals is not None and intervals[1] > CONSTANT_RATE_SPREAD * intervals[0]:
        short, long = (1 / t for t in intervals)
        raise LRRError(
            f"{source}: variable frame rate ({long:.3g} to {short:.3g} fps); the outputs would be written at one "
            f"rate and its motion would change speed: make it constant first (ffmpeg -i {Path(source).name} "
            f"-fps_mode cfr -r {short:.3g} constant.mp4)"
        )


def _header(path: Path) -> list[str]:
    """ffmpeg's reading of a media file's header, a line each (none for a folder)."""
    if not Path(path).is_file():
        return []
    return run_ffmpeg("-hide_banner", "-i", str(path)).stderr.splitlines()


def video_duration(path: Path, header: list[str] | None = None) -> float | None:
    """The container's duration of a media file in seconds (ffmpeg's ``Duration:`` line,
    which imageio reads too, without starting a decode), or None where it gives none.
    ``header``: the file's :func:`_header`, when it has been read."""
    for line in _header(path) if header is None else header:
        if line.strip().startswith("Duration:"):
            hours, minutes, seconds = line.split("Duration:", 1)[1].split(",", 1)[0].strip().split(":")
            try:
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            except ValueError:  # "N/A"
                return None
    return None


def video_comment(path: Path) -> str | None:
    """The ``comment`` tag of a video file (what :class:`VideoWriter` was given), or None."""
    for line in _header(path):
        key, _, value = line.strip().partition(":")
        if key.strip() == "comment":
            return value.strip()
    return None


#: The stream kinds :func:`stream_codecs` lists.
STREAM_KINDS = ("Audio", "Subtitle")


def stream_codecs(source: Path) -> dict[str, list[str]]:
    """The codecs of the audio and subtitle streams of the file ``source`` by kind
    (``{"Audio": ["aac"], "Subtitle": []}``; empty for a folder of frames), from one
    reading of its header."""
    lines = _header(source)
    return {
        kind: [line.split(f"{kind}:", 1)[1].split()[0].strip(",") for line in lines if f"{kind}:" in line]
        for kind in STREAM_KINDS
    }


def frame_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of a video file's frames (:func:`video_probe`'s reading)."""
    (_, height, width), _ = video_probe(path)
    return width, height
