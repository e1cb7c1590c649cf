"""What a caller asks of a command: frozen requests (inputs, settings, outputs) and the
runtime they run in. The CLI builds them from its options; a Python user builds them
directly. Units are the library's: pixel values and ``sigma`` in 0-255 as on the
command line, paths as ``Path`` or ``str``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lrrtool.jobs.videos import OUTPUT_VIDEOS
from lrrtool.recsys.settings import CompletionSettings
from lrrtool.tasks.denoise import DenoiseSettings
from lrrtool.tasks.inpaint import InpaintSettings
from lrrtool.video import SeparateSettings


@dataclass(frozen=True)
class Runtime:
    """Where a command runs: ``device`` (auto, cpu, cuda), ``dtype`` (float32, float64),
    CPU ``threads`` (0: every core; None: the command's default, every core for the
    image commands, one torch thread for the others), the process's memory budget
    ``memory_gib`` (tiles of patch groups, chunks of frames), and ``ray`` (each input, or
    each segment of a video, as a Ray task; ``ray_address``: which cluster, else
    ``RAY_ADDRESS`` or a local instance). ``command_line``: recorded in the report."""

    device: str = "auto"
    dtype: str = "float32"
    threads: int | None = None
    memory_gib: float = 2.0
    ray: bool = False
    ray_address: str | None = None
    command_line: str | None = None


@dataclass(frozen=True)
class Outputs:
    """Where results go: ``output`` (one input), else ``output_dir`` (default: beside each
    input); existing outputs are skipped unless ``overwrite``; ``report``: the JSON
    report's path (None: none is written, the report is still returned)."""

    output: Path | None = None
    output_dir: Path | None = None
    overwrite: bool = False
    report: Path | None = None


@dataclass(frozen=True)
class InpaintRequest:
    """Fill the pixels of ``mask`` (white = fill; or one per input in ``mask_dir``, or a
    seeded random ``drop`` fraction) in each of ``inputs`` (files or glob patterns);
    ``reference``: a clean image for PSNR/SSIM; ``segment_frames``: with Ray, the frames
    of each task a clip is split into (None: the clip shared over the cluster's slots)."""

    inputs: tuple[str | Path, ...]
    mask: Path | None = None
    mask_dir: Path | None = None
    drop: float | None = None
    invert_mask: bool = False
    resize_mask: bool = False
    reference: Path | None = None
    settings: InpaintSettings = field(default_factory=InpaintSettings)
    outputs: Outputs = Outputs()
    runtime: Runtime = Runtime()
    segment_frames: int | None = None


@dataclass(frozen=True)
class DenoiseRequest:
    """Denoise each of ``inputs`` at noise level ``sigma`` (0-255 units; None: estimated);
    ``segment_frames`` as :class:`InpaintRequest`'s."""

    inputs: tuple[str | Path, ...]
    sigma: float | None = None
    reference: Path | None = None
    settings: DenoiseSettings = field(default_factory=DenoiseSettings)
    outputs: Outputs = Outputs()
    runtime: Runtime = Runtime()
    segment_frames: int | None = None


@dataclass(frozen=True)
class SeparateRequest:
    """Separate ``video`` (a file or a folder of frames) into ``outputs.output_dir``
    (default ``NAME.separated/`` beside it): the videos named in ``videos``, PNG ``frames``
    too if asked. ``first_frame``/``max_frames`` pick frames; ``scale``, ``size`` (width,
    height) and ``grey`` what is read; ``chunk_frames``: most frames solved at once;
    ``segment_frames``: with Ray, the frames of each task."""

    video: Path
    first_frame: int = 0
    max_frames: int | None = None
    scale: float | None = None
    size: tuple[int, int] | None = None
    grey: bool = False
    chunk_frames: int | None = None
    videos: tuple[str, ...] = OUTPUT_VIDEOS
    frames: bool = False
    segment_frames: int | None = None
    settings: SeparateSettings = field(default_factory=SeparateSettings)
    outputs: Outputs = Outputs()
    runtime: Runtime = Runtime()


@dataclass(frozen=True)
class CompleteRequest:
    """Fit the ``ratings`` CSV (user,item,rating); write the predictions of the ``predict``
    pairs (user,item) to ``outputs.output`` (default ``PAIRS.predictions.csv``), and/or
    hold out a seeded ``test_fraction`` and report its errors."""

    ratings: Path
    predict: Path | None = None
    test_fraction: float | None = None
    settings: CompletionSettings = field(default_factory=CompletionSettings)
    outputs: Outputs = Outputs()
    runtime: Runtime = Runtime()
