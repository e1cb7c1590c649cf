"""One function per command: a request in, the report out (the dict the JSON report
holds, written too when the request names a file). What the CLI, the bench scripts, Ray
workers and Python users call; no terminal I/O (progress and each input's end go to a
:data:`~lrrtool.jobs.progress.Listener`)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path

from lrrtool import media
from lrrtool.errors import LRRError
from lrrtool.jobs import clips, images, ratings, videos
from lrrtool.jobs.batch import (
    RayRun,
    check_report,
    expand_inputs,
    image_targets,
    ray_run,
    report_header,
    run_batch,
    skip_entry,
    write_report,
)
from lrrtool.jobs.progress import Listener, Update, ignore, solver_updates
from lrrtool.jobs.requests import CompleteRequest, DenoiseRequest, InpaintRequest, Runtime, SeparateRequest
from lrrtool.jobs.restore import Segments
from lrrtool.jobs.runtime import resolve_device, resolve_dtype, set_threads

#: The output names of the image commands: ``NAME.<suffix>.png``.
OUTPUT_SUFFIXES = {"inpaint": "inpainted", "denoise": "denoised"}
#: How an error is worded in a report (the CLI words parameters as its flags).
Describe = Callable[[LRRError], str]


def _start(runtime: Runtime, *, shared: bool, default_threads: int):
    """Apply the runtime's threads; its device and dtype."""
    set_threads(default_threads if runtime.threads is None else runtime.threads, shared=shared)
    return resolve_device(runtime.device), resolve_dtype(runtime.dtype)


def inpaint(request: InpaintRequest, listener: Listener = ignore, describe: Describe = str) -> dict:
    """``lrrtool inpaint``: fill the masked pixels of each input (:func:`lrrtool.tasks.inpaint.inpaint`),
    writing ``NAME.inpainted.png`` (or ``outputs.output``). Returns the report: the run's
    header and one entry per input (``error`` for a failed one, ``skipped`` for one whose
    output exists)."""
    r = request
    if sum(x is not None for x in (r.mask, r.mask_dir, r.drop)) != 1:
        raise LRRError("give exactly one of mask, mask_dir or drop", mentions=("mask", "mask_dir", "drop"))
    if r.drop is not None and not 0 < r.drop < 1:
        raise LRRError(f"drop must be a fraction in (0, 1), got {r.drop}", parameter="drop")
    work = functools.partial(
        _inpaint_one, mask=r.mask, mask_dir=r.mask_dir, settings=r.settings, drop=r.drop, invert_mask=r.invert_mask,
        resize_mask=r.resize_mask, reference=r.reference,
    )  # fmt: skip
    mask_file = None if str(r.mask) == images.ALPHA_MASK else r.mask
    return _image_batch("inpaint", r, work, (mask_file, r.reference), listener, describe)


def _inpaint_one(
    path: Path, target: Path, *, mask: Path | None, mask_dir: Path | None, drop, segments: Segments | None, **options
) -> dict:
    """One input of :func:`inpaint`: its mask found, then :func:`lrrtool.jobs.images.inpaint_file`
    (a clip: :func:`lrrtool.jobs.clips.inpaint_clip`)."""
    if media.is_clip(path):
        if mask is None or str(mask) == images.ALPHA_MASK:
            raise LRRError("a clip is inpainted with mask (one image, or a folder or video of masks)",
                           parameter="mask")  # fmt: skip
        if options.pop("reference") is not None:
            raise LRRError("reference applies to images, not clips", parameter="reference")
        return clips.inpaint_clip(path, target, mask=Path(mask), segments=segments, **options)
    found = None if drop is not None else media.find_mask(path, mask=mask, mask_dir=mask_dir)
    return images.inpaint_file(path, target, mask=found, drop=drop, **options)


def _denoise_one(path: Path, target: Path, *, reference: Path | None, segments: Segments | None, **options) -> dict:
    """One input of :func:`denoise`: :func:`lrrtool.jobs.images.denoise_file` (a clip:
    :func:`lrrtool.jobs.clips.denoise_clip`)."""
    if media.is_clip(path):
        if reference is not None:
            raise LRRError("reference applies to images, not clips", parameter="reference")
        return clips.denoise_clip(path, target, segments=segments, **options)
    return images.denoise_file(path, target, reference=reference, **options)


def denoise(request: DenoiseRequest, listener: Listener = ignore, describe: Describe = str) -> dict:
    """``lrrtool denoise``: denoise each input (:func:`lrrtool.tasks.denoise.denoise`) at
    ``sigma`` (0-255 units; None: estimated), writing ``NAME.denoised.png``. Returns the
    report, as :func:`inpaint` does."""
    r = request
    if r.sigma is not None and not 0 < r.sigma < 255:
        raise LRRError(f"sigma must be in (0, 255), got {r.sigma}", parameter="sigma")
    sigma = None if r.sigma is None else r.sigma / 255
    work = functools.partial(_denoise_one, settings=r.settings, sigma=sigma, reference=r.reference)
    return _image_batch("denoise", r, work, (r.reference,), listener, describe)


def _image_batch(command: str, request, work: functools.partial, files: tuple, listener: Listener, describe) -> dict:
    """What :func:`inpaint` and :func:`denoise` share: the runtime applied, the inputs
    expanded, the given ``files`` (mask, reference) checked and never overwritten, the
    batch run (``work`` completed with the device, precision, budget), the report."""
    r, out = request, request.outputs
    device, dtype = _start(r.runtime, shared=True, default_threads=0)
    inputs = expand_inputs(r.inputs)
    protect = list(inputs) + [Path(x) for x in files if x is not None]
    for given in files:
        if given is None:
            continue
        if media.is_clip(given) and any(map(media.is_clip, inputs)):  # a folder or a video of masks
            if not Path(given).exists():
                raise LRRError(f"{given}: no such file or folder")
        else:
            media.existing_file(given, "an image file")
    check_report(out.report, protect)
    ray = ray_run(r.runtime.ray, r.runtime.ray_address, device)
    if r.segment_frames is not None and (ray is None or r.segment_frames < 1):
        problem = "must be >= 1" if ray is not None else "splits a clip into Ray tasks: give ray too"
        raise LRRError(f"segment_frames {problem}", parameter="segment_frames", mentions=("ray",))
    target = image_targets(out.output, out.output_dir, OUTPUT_SUFFIXES[command], inputs, protect)
    place = images.Placement(device, dtype, r.runtime.memory_gib, tuple(protect))
    with _ray_session(ray) as engine:
        segments = None
        if ray is not None and any(map(media.is_clip, inputs)):
            segments = Segments(*_segment_runner(engine, ray), r.segment_frames)
        results = run_batch(
            inputs, target, functools.partial(work, place=place, segments=segments), label=command,
            listener=listener, overwrite=out.overwrite, ray=ray, in_process=media.is_clip, describe=describe,
        )  # fmt: skip
    header = report_header(command, r.settings.resolved(), device, dtype, r.runtime.command_line)
    report = {**header, "results": results}
    write_report(out.report, report, protect, listener)
    return report


def separate(request: SeparateRequest, listener: Listener = ignore, describe: Describe = str) -> dict:
    """``lrrtool separate``: the video's background, foreground and mask videos
    (:func:`lrrtool.jobs.videos.separate_video`; with Ray, in segments:
    :func:`~lrrtool.jobs.videos.separate_segments`). Returns the report; when an output
    exists and ``overwrite`` is off, nothing is done and the report is the skipped entry
    (``skipped``: true), not written."""
    r, out = request, request.outputs
    device, dtype = _start(r.runtime, shared=False, default_threads=1)
    video = Path(r.video)
    folder = Path(out.output_dir) if out.output_dir is not None else _separation_folder(video, r.videos)
    check_report(out.report, [video])
    skips = (skip_entry(video, folder / f"{name}.mp4", out.overwrite) for name in r.videos)
    if (entry := next((e for e in skips if e is not None), None)) is not None:
        listener(Update(f"separate {video.name}", "skipped", entry=entry))
        return entry
    media.check_constant_rate(video)  # once here: not again in each segment's task
    ray = ray_run(r.runtime.ray, r.runtime.ray_address, device)
    if r.segment_frames is not None and ray is None:
        raise LRRError("segment_frames splits the video into Ray tasks: give ray too", parameter="segment_frames",
                       mentions=("ray",))  # fmt: skip
    if ray is not None and r.frames:
        raise LRRError("frames is not available with ray: the segments write videos only", parameter="frames",
                       mentions=("ray",))  # fmt: skip
    clip = videos.Clip(r.first_frame, r.max_frames, r.scale, r.size, r.grey)
    common = dict(clip=clip, chunk_frames=r.chunk_frames, memory_gib=r.runtime.memory_gib, outputs=r.videos)
    common |= dict(device=device, dtype=dtype, listener=listener)
    if ray is None:
        entry = videos.separate_video(video, folder, r.settings, frames=r.frames, **common)
    else:
        entry = _separate_on_ray(video, folder, r, ray, common)
    header = report_header("separate", r.settings.resolved(), device, dtype, r.runtime.command_line)
    report = {**header, **entry}
    write_report(out.report, report, [video], listener)
    return report


def _ray_session(ray: RayRun | None):
    """One Ray session for a whole batch (None: none): its tasks and clips' segments share it."""
    if ray is None:
        return contextlib.nullcontext()
    from lrrtool import cluster

    return cluster.session(ray.address)


def _segment_runner(engine, ray: RayRun) -> tuple[videos.TaskRunner, int]:
    """How a video's or a clip's segments run on the Ray session ``engine``: one task each
    (``ray``'s threads, or a GPU), and as many at once as the cluster has slots."""
    from lrrtool import cluster

    def run(jobs, work, finished) -> None:
        cluster.run_tasks(engine, jobs, work, threads=ray.threads, gpus=ray.gpus, finished=finished)

    resources = engine.cluster_resources()
    slots = int(resources.get("GPU", 0)) if ray.gpus else int(resources.get("CPU", 1)) // ray.threads
    return run, max(1, slots)


def _separation_folder(video: Path, names: tuple[str, ...]) -> Path:
    """``NAME.separated/`` beside the video, or ``NAME.EXT.separated/`` when the first
    holds another input's outputs (``clip.mov``'s, for ``clip.mkv``): two inputs never
    share one folder by default."""
    folder = video.with_name(f"{video.stem}.separated")
    made = next((folder / f"{name}.mp4" for name in names if (folder / f"{name}.mp4").exists()), None)
    comment = None if made is None else media.video_comment(made)  # None: made before videos were tagged
    if comment is not None and comment != videos.source_comment(video):
        return video.with_name(f"{video.name}.separated")
    return folder


def _separate_on_ray(video: Path, folder: Path, request: SeparateRequest, ray, common: dict) -> dict:
    """The video's segments as Ray tasks, as many at once as the cluster has slots."""
    with _ray_session(ray) as engine:
        run, slots = _segment_runner(engine, ray)
        return videos.separate_segments(
            video, folder, request.settings, run=run, segment_frames=request.segment_frames, slots=slots, **common
        )


def complete(request: CompleteRequest, listener: Listener = ignore, describe: Describe = str) -> dict:
    """``lrrtool complete``: fit the ratings, write the predictions of the pairs and/or
    report the held-out errors (:func:`lrrtool.jobs.ratings.complete_csv`). Returns the
    report (one entry); with predictions that exist and no ``overwrite``, the pairs are
    skipped (and with no held-out test, nothing is done: the skipped entry is returned)."""
    from lrrtool.recsys import tables

    r, out = request, request.outputs
    if r.predict is None and r.test_fraction is None:
        raise LRRError("nothing to do: give predict (a CSV of pairs) and/or test_fraction",
                       mentions=("predict", "test_fraction"))  # fmt: skip
    if out.output is not None and r.predict is None:
        raise LRRError("output needs predict (the pairs to write predictions for)", parameter="output",
                       mentions=("predict",))  # fmt: skip
    device, dtype = _start(r.runtime, shared=False, default_threads=1)
    protect = [Path(x) for x in (r.ratings, r.predict) if x is not None]
    for given in protect:
        media.existing_file(given, "a CSV file")
    check_report(out.report, protect)
    task = f"complete {Path(r.ratings).name}"
    predict, target = r.predict, None
    if predict is not None:
        predict = Path(predict)
        target = Path(out.output) if out.output is not None else predict.with_name(f"{predict.stem}.predictions.csv")
        tables.check_predictions_path(target, protect)
        if (entry := skip_entry(predict, target, out.overwrite)) is not None:
            listener(Update(task, "skipped", entry=entry))
            if r.test_fraction is None:
                return entry
            predict = target = None  # the held-out test still runs
    entry = ratings.complete_csv(
        Path(r.ratings), r.settings, predict=predict, target=target, test_fraction=r.test_fraction, device=device,
        callback=solver_updates(listener, task),
    )  # fmt: skip
    listener(Update(task, "done", 1, 1, entry=entry))
    header = report_header("complete", r.settings.resolved(), device, dtype, r.runtime.command_line)
    report = {**header, "results": [entry]}
    write_report(out.report, report, protect + ([target] if target is not None else []), listener)
    return report
