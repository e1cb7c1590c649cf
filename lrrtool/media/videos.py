"""Videos and folders of frames: read in chunks ``(T, C, H, W)``, written by ffmpeg (libx264)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lrrtool.errors import LRRError
from lrrtool.media.files import IMAGE_SUFFIXES, atomic_path, check_output, error_summary
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
    if _existing_is_folder(path):
        files = _frame_files(path)
        first = open_image(files[0])
        target = _target_size(*first.size, scale, size)
        frames = (_folder_frame(f, first.size) for f in files)
        fps = 25.0
    else:
        try:
            reader = _video_reader(path)
            meta = reader.get_meta_data()
        except Exception as error:  # imageio raises many types for unreadable input
            raise LRRError(f"{path}: not a readable video ({error_summary(error)})") from None
        fps = float(meta.get("fps") or (meta.get("duration") and 1000 / meta["duration"]) or 25.0)
        width, height = meta.get("size") or meta.get("source_size") or (0, 0)
        target = _target_size(width, height, scale, size) if width else size
        frames = _safe_frames(reader, path)
    held = chunk_frames + lookahead
    limit = None if max_frames is None else max_frames + lookahead
    chunk, staged, filled, waiting, count, carried = None, None, 0, 0, 0, None
    for index, frame in enumerate(frames):
        if index < start:
            continue
        if limit is not None and count >= limit:
            break
        array = _frame_uint8(frame, target, grey)
        if staged is None:
            staged = np.empty((STAGED_FRAMES, *array.shape), dtype=np.uint8)
        if chunk is None:  # filled in place: no second copy of the chunk while stacking
            chunk = torch.empty((held, array.shape[2], *array.shape[:2]), dtype=torch.uint8)
            if carried is not None:
                filled = carried.shape[0]
                chunk[:filled] = carried
                carried = None
        staged[waiting] = array
        waiting += 1
        filled += 1
        count += 1
        if waiting == STAGED_FRAMES or filled == held:
            _unstage(chunk, staged, filled, waiting)
            waiting = 0
        if filled == held:
            yield _chunk(chunk, raw), fps
            # The look-ahead is copied once the consumer has let the chunk go, so the copy
            # does not sit beside its solve.
            carried = chunk[chunk_frames:].clone() if lookahead else None
            chunk, filled = None, 0
    if chunk is not None:
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
#: of the reading thread for 120 720p frames, this about 0.12 s.
STAGED_FRAMES = 8


def _unstage(chunk: torch.Tensor, staged: np.ndarray, filled: int, waiting: int) -> None:
    """Move the ``waiting`` staged frames that end at frame ``filled`` into ``chunk``."""
    chunk[filled - waiting : filled].copy_(torch.from_numpy(staged[:waiting]).permute(0, 3, 1, 2))


def _chunk(frames: torch.Tensor, raw: bool) -> torch.Tensor:
    return frames if raw else frames.float().div_(255)


def _existing_is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of frames (False: a video file); missing is an error."""
    if not path.exists():
        raise LRRError(f"{path}: no such file or folder")
    return path.is_dir()


def _frame_files(folder: Path) -> list[Path]:
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
    return imageio.get_reader(path, format="ffmpeg", output_params=["-fps_mode", "passthrough"])


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
        files = _frame_files(path)
        width, height = _target_size(*open_image(files[0]).size, scale, size)
        return (channels, height, width), len(files)
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


def _safe_frames(reader, path: Path):
    try:
        yield from reader
    except (RuntimeError, OSError, ValueError) as error:
        raise LRRError(f"{path}: cannot decode the video ({error_summary(error)})") from None
    finally:
        reader.close()


#: libx264's speed preset for the videos ``VideoWriter`` encodes: ``veryfast`` encodes
#: 720p about 2.8x quicker than the default ``medium`` (measured: 1.97 s against 5.47 s
#: for 120 frames on 2 cores) at the same constant quality; files are a little larger.
X264_PRESET = "veryfast"
#: libx264's constant quality (imageio's ``quality`` 8 of 0-10).
X264_CRF = 10


def _x264_options(preset: str, width: int, height: int) -> list[str]:
    """The encoder options of every lossy video lrrtool writes: H.264 at ``X264_CRF``,
    yuv420p, or yuv444p when a side is odd (4:2:0 chroma needs even sides; padding would
    change the size, cropping would lose a row)."""
    pixels = "yuv444p" if width % 2 or height % 2 else "yuv420p"
    return ["-vcodec", "libx264", "-pix_fmt", pixels, "-crf", str(X264_CRF), "-preset", preset]


class VideoWriter:
    """Atomic streaming writer: frames ``(T, C, H, W)`` (float in ``[0, 1]`` or uint8)
    appended in chunks (``comment``: a tag the file keeps); H.264 at constant quality
    (``X264_CRF``, :func:`_x264_options`) with libx264's speed ``preset``, or with
    ``lossless`` the frames exactly (libx264 at qp 0 on RGB or grey planes: a part that
    :func:`join_videos` encodes). The video has the frames' size exactly, odd sides too."""

    def __init__(
        self,
        path: str | Path,
        fps: float,
        *,
        protect: Iterable[str | Path] = (),
        preset: str = X264_PRESET,
        lossless: bool = False,
        comment: str | None = None,
    ) -> None:
        self.path = check_output(path, protect)
        self._comment = comment
        self._context = atomic_path(self.path, protect)
        self._tmp = self._context.__enter__()
        self._frames, self._fps, self._preset, self._lossless = 0, fps, preset, lossless
        self._writer = None

    def _start_encoder(self, channels: int, height: int, width: int) -> None:
        import imageio.v2 as imageio

        if self._lossless:
            codec, pixels = ("libx264rgb", "rgb24") if channels == 3 else ("libx264", "gray")
            output = ["-vcodec", codec, "-pix_fmt", pixels, "-qp", "0", "-preset", "ultrafast"]
        else:
            output = _x264_options(self._preset, width, height)
        self._writer = imageio.get_writer(
            self._tmp,
            format="ffmpeg",
            fps=self._fps,
            codec=None,  # given in output_params, with the pixel format and quality
            quality=None,
            macro_block_size=1,
            output_params=output + (["-metadata", f"comment={self._comment}"] if self._comment else []),
            ffmpeg_log_level="quiet",  # a failed write is checked and reported by finish()
        )

    def append(self, frames: torch.Tensor) -> None:
        if frames.ndim != 4 or frames.shape[1] not in (1, 3):
            raise LRRError(f"cannot write frames of shape {tuple(frames.shape)}; expected (T, 1 or 3, H, W)")
        if frames.dtype != torch.uint8:
            frames = frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
        frames = frames.cpu()
        if self._writer is None:
            self._start_encoder(*frames.shape[1:])
        # Grey frames go to ffmpeg as one plane; colour as (H, W, 3).
        arrays = frames[:, 0].contiguous() if frames.shape[1] == 1 else frames.permute(0, 2, 3, 1).contiguous()
        for frame in arrays.numpy():
            try:
                self._writer.append_data(frame)
            except OSError as error:  # ffmpeg died (a full disk, a removed folder)
                free = shutil.disk_usage(self.path.parent).free
                reason = "the disk is full" if free < 2**20 else f"ffmpeg stopped: {str(error).splitlines()[0]}"
                raise LRRError(f"{self.path}: cannot write ({reason})") from None
            self._frames += 1

    @property
    def frames(self) -> int:
        """Frames appended so far."""
        return self._frames

    def finish(self) -> None:
        """Let ffmpeg finish the file and check that it holds every frame appended: ffmpeg
        reports a failed write (a full disk) only on its own stderr, so an incomplete file
        would otherwise pass for a finished one. Raises ``LRRError``; the file stays
        temporary until :meth:`commit`."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._frames == 0:
            raise LRRError(f"{self.path}: no frames to write")
        problem = _video_problem(self._tmp, self._frames, self._fps)
        if problem:
            raise LRRError(f"{self.path}: cannot write ({problem})")

    def add_audio(self, source: Path, *, start: float = 0.0, duration: float | None = None) -> str | None:
        """After :meth:`finish`: the audio of ``source`` (see :func:`add_audio`) joins the
        still temporary file. Returns what was not kept as it was, or None."""
        return add_audio(self._tmp, source, start=start, duration=duration)

    def commit(self) -> None:
        """Move the finished file into place."""
        self._context.__exit__(None, None, None)

    def abort(self) -> None:
        """Stop ffmpeg and remove the temporary file (and any folder made for it)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the write already failed; the file goes anyway
                self._writer.close()
            self._writer = None
        self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def close(self, ok: bool = True) -> None:
        """:meth:`finish` and :meth:`commit` (or :meth:`abort` when not ``ok`` or when
        finishing fails)."""
        if not ok:
            self.abort()
            return
        try:
            self.finish()
        except BaseException:
            self.abort()
            raise
        self.commit()


def join_videos(
    parts: list[Path],
    target: Path,
    *,
    frames: int,
    fps: float,
    preset: str | None = None,
    protect: Iterable[Path] = (),
) -> Path:
    """Join the videos ``parts`` in order into ``target`` by ffmpeg's concat demuxer,
    atomically; refused unless the result holds ``frames`` frames at ``fps``.

    Without ``preset`` the parts (one encoder's settings) are copied, not re-encoded: each
    part's first frame stays a key frame. With ``preset`` the parts (lossless,
    :class:`VideoWriter` with ``lossless``) are encoded once, as :class:`VideoWriter`
    encodes with that preset: a border between parts is then an ordinary frame of one
    stream. A key frame re-codes the picture, a step of about 1/255 in a still background
    (measured: 1.0-1.2/255 at x264's key frames, against a median of 0.07/255 between
    frames), which a seam must not add."""

    import imageio_ffmpeg

    codec = ["-c", "copy"]
    if preset is not None:
        # A grey part decodes as full-range YUV, which must go to limited range as a grey
        # frame piped by VideoWriter does (RGB parts ignore in_range).
        width, height = _frame_size(parts[0])
        codec = ["-vf", "scale=in_range=full:out_range=limited", *_x264_options(preset, width, height)]
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.stem}.") as scratch:
        listing = Path(scratch) / "parts.txt"
        listing.write_text("".join(f"file '{Path(p).resolve().as_posix()}'\n" for p in parts))
        with atomic_path(target, protect) as tmp:
            command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0"]
            command += ["-i", str(listing), *codec, "-f", "mp4", str(tmp)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
                raise LRRError(f"{target.name}: cannot join the segments ({reason})")
            if (problem := _video_problem(tmp, frames, fps)) is not None:
                raise LRRError(f"{target.name}: cannot join the segments ({problem})")
    return target


def _ffmpeg(*arguments: str) -> subprocess.CompletedProcess:
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
    listing = _ffmpeg("-hide_banner", "-loglevel", "error", "-i", str(source), "-map", "0:v:0", "-c", "copy",
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


def video_comment(path: Path) -> str | None:
    """The ``comment`` tag of a video file (what :class:`VideoWriter` was given), or None."""
    if not Path(path).is_file():
        return None
    probe = _ffmpeg("-hide_banner", "-i", str(path))
    for line in probe.stderr.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "comment":
            return value.strip()
    return None


def _stream_codecs(source: Path, kind: str) -> list[str]:
    """The codecs of the ``kind`` (``Audio``, ``Subtitle``) streams of the file ``source``
    (none for a folder of frames), from ffmpeg's reading of its header."""
    if not Path(source).is_file():
        return []
    probe = _ffmpeg("-hide_banner", "-i", str(source))
    marker = f"{kind}:"
    return [line.split(marker, 1)[1].split()[0].strip(",") for line in probe.stderr.splitlines() if marker in line]


def audio_codecs(source: Path) -> list[str]:
    """The codecs of the audio streams of the file ``source``."""
    return _stream_codecs(source, "Audio")


def add_audio(video: Path, source: Path, *, start: float = 0.0, duration: float | None = None) -> str | None:
    """Put the audio and subtitle streams of ``source`` (from ``start`` seconds, for
    ``duration`` seconds: the part the video's frames show) into the MP4 file ``video``,
    in place. Audio is copied without re-encoding (a codec MP4 cannot hold as it is is
    encoded to AAC); text subtitles become MP4's own text track (``mov_text``); picture
    subtitles, which MP4 cannot hold, are left out. Returns what was not kept as it was,
    in words, or None (also when ``source`` has neither)."""
    audio, subtitles = audio_codecs(source), _stream_codecs(source, "Subtitle")
    if not audio and not subtitles:
        return None
    video = Path(video)
    staged = video.with_name(f".{video.name}.streams.mp4")
    window = ["-ss", f"{start:.6f}"] + ([] if duration is None else ["-t", f"{duration:.6f}"])
    base = ["-y", "-loglevel", "error", "-i", str(video), *window, "-i", str(source), "-map", "0:v"]
    attempts = [  # (maps and codecs, what it loses)
        (["-map", "1:a?", "-map", "1:s?", "-c", "copy", "-c:s", "mov_text"], None),
        (["-map", "1:a?", "-map", "1:s?", "-c:v", "copy", "-c:a", "aac", "-c:s", "mov_text"], "audio encoded to AAC"),
        (["-map", "1:a?", "-c", "copy"], "subtitles not kept"),
        (["-map", "1:a?", "-c:v", "copy", "-c:a", "aac"], "audio encoded to AAC, subtitles not kept"),
    ]
    try:
        for options, loss in attempts:
            done = _ffmpeg(*base, *options, "-f", "mp4", str(staged))
            if done.returncode == 0:
                os.replace(staged, video)
                return None if loss is None else f"{loss}: MP4 cannot hold {', '.join(audio + subtitles)} as it is"
        reason = (done.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
        return f"audio and subtitles not kept ({reason})"
    finally:
        staged.unlink(missing_ok=True)


def _frame_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of a video file's frames."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="ffmpeg")
    try:
        return tuple(reader.get_meta_data()["size"])
    finally:
        reader.close()


def _video_problem(path: Path, frames: int, fps: float) -> str | None:
    """Why the video file at ``path`` does not hold ``frames`` frames at ``fps``, or None."""
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(path, format="ffmpeg")
        duration = reader.get_meta_data().get("duration")
        reader.close()
    except Exception:  # imageio raises many types for an unreadable file
        duration = None
    if duration and abs(duration * fps - frames) <= 1.5:
        return None
    free = shutil.disk_usage(path.parent).free
    reason = "the disk is full" if free < 2**20 else "ffmpeg could not finish the video"
    return f"{reason}; the file came out incomplete and was removed"
