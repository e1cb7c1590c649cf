"""Videos written: H.264 through ffmpeg (libx264), atomically, checked to hold every
frame; parts joined; the input's audio and subtitles added."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from lrrtool.errors import LRRError
from lrrtool.media.files import atomic_path, check_output
from lrrtool.media.videos import GBRP_CHANNELS, frame_size, run_ffmpeg, stream_codecs, video_duration

#: libx264's speed preset for the videos ``VideoWriter`` encodes: ``veryfast`` encodes
#: 720p about 2.8x quicker than the default ``medium`` (measured: 1.97 s against 5.47 s
#: for 120 frames on 2 cores) at the same constant quality; files are a little larger.
X264_PRESET = "veryfast"
#: libx264's constant quality (imageio's ``quality`` 8 of 0-10).
X264_CRF = 10
#: ffmpeg's pixel format of the frames piped to it, by channels: colour goes as planes
#: (G, B, R, ffmpeg's planar order), each plane of the (C, H, W) frames written as it is;
#: an (H, W, 3) transpose cost 15 ms per 8 720p frames, and the encoded file is the same
#: bytes.
PIPE_FORMATS = {1: "gray", 3: "gbrp"}


def _x264_options(preset: str, width: int, height: int) -> list[str]:
    """The encoder options of every lossy video lrrtool writes: H.264 at ``X264_CRF``,
    yuv420p, or yuv444p when a side is odd (4:2:0 chroma needs even sides; padding would
    change the size, cropping would lose a row)."""
    return ["-vcodec", "libx264", "-pix_fmt", _x264_pixels(width, height), "-crf", str(X264_CRF), "-preset", preset]


def _x264_pixels(width: int, height: int) -> str:
    return "yuv444p" if width % 2 or height % 2 else "yuv420p"


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
        import imageio_ffmpeg

        if self._lossless:
            codec, pixels = ("libx264rgb", "rgb24") if channels == 3 else ("libx264", "gray")
            output = ["-qp", "0", "-preset", "ultrafast"]
        else:
            codec, pixels = "libx264", _x264_pixels(width, height)
            output = _x264_options(self._preset, width, height)  # repeats codec and pixels
        self._writer = imageio_ffmpeg.write_frames(
            str(self._tmp),
            (width, height),
            pix_fmt_in=PIPE_FORMATS[channels],
            pix_fmt_out=pixels,
            fps=self._fps,
            codec=codec,
            quality=None,  # in the output options
            macro_block_size=1,
            output_params=output + (["-metadata", f"comment={self._comment}"] if self._comment else []),
            ffmpeg_log_level="quiet",  # a failed write is checked and reported by finish()
        )
        self._writer.send(None)  # starts ffmpeg

    def append(self, frames: torch.Tensor) -> None:
        if frames.ndim != 4 or frames.shape[1] not in (1, 3):
            raise LRRError(f"cannot write frames of shape {tuple(frames.shape)}; expected (T, 1 or 3, H, W)")
        if frames.dtype != torch.uint8:
            frames = frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
        frames = frames.cpu()
        if self._writer is None:
            self._start_encoder(*frames.shape[1:])
        order = GBRP_CHANNELS if frames.shape[1] == 3 else (0,)  # ffmpeg's planar G, B, R: no (H, W, 3) transpose
        for frame in frames.contiguous().numpy():
            try:
                for channel in order:  # a plane at a time: no reordered copy of the frames
                    self._writer.send(frame[channel])
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

    def add_audio(
        self, source: Path, *, start: float = 0.0, duration: float | None = None, streams: dict | None = None
    ) -> str | None:
        """After :meth:`finish`: the audio of ``source`` (see :func:`add_audio`) joins the
        still temporary file. Returns what was not kept as it was, or None."""
        return add_audio(self._tmp, source, start=start, duration=duration, streams=streams)

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
        width, height = frame_size(parts[0])
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


def add_audio(
    video: Path,
    source: Path,
    *,
    start: float = 0.0,
    duration: float | None = None,
    streams: dict[str, list[str]] | None = None,
) -> str | None:
    """Put the audio and subtitle streams of ``source`` (from ``start`` seconds, for
    ``duration`` seconds: the part the video's frames show) into the MP4 file ``video``,
    in place. Audio is copied without re-encoding (a codec MP4 cannot hold as it is is
    encoded to AAC); text subtitles become MP4's own text track (``mov_text``); picture
    subtitles, which MP4 cannot hold, are left out. Returns what was not kept as it was,
    in words, or None (also when ``source`` has neither). ``streams``: the source's
    :func:`~lrrtool.media.videos.stream_codecs`, when the caller has read them already."""
    streams = stream_codecs(source) if streams is None else streams
    audio, subtitles = streams["Audio"], streams["Subtitle"]
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
            done = run_ffmpeg(*base, *options, "-f", "mp4", str(staged))
            if done.returncode == 0:
                os.replace(staged, video)
                return None if loss is None else f"{loss}: MP4 cannot hold {', '.join(audio + subtitles)} as it is"
        reason = (done.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
        return f"audio and subtitles not kept ({reason})"
    finally:
        staged.unlink(missing_ok=True)


def finish_all(writers: Iterable[VideoWriter]) -> None:
    """:meth:`VideoWriter.finish` of every writer at once: each ffmpeg encodes its last
    frames and each file is checked while the others are (one after another, each waited
    for the one before). Raises the first writer's error once all are done."""
    writers = list(writers)
    with ThreadPoolExecutor(max(len(writers), 1)) as pool:
        done = [pool.submit(writer.finish) for writer in writers]
    for future in done:
        future.result()


def _video_problem(path: Path, frames: int, fps: float) -> str | None:
    """Why the video file at ``path`` does not hold ``frames`` frames at ``fps``, or None.
    From the file's header alone: 0.05 s, where a reader's first frame took 0.13 s at 720p."""
    duration = video_duration(path)
    if duration and abs(duration * fps - frames) <= 1.5:
        return None
    free = shutil.disk_usage(path.parent).free
    reason = "the disk is full" if free < 2**20 else "ffmpeg could not finish the video"
    return f"{reason}; the file came out incomplete and was removed"
