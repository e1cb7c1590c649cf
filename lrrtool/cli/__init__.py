"""The ``lrrtool`` command line: the only package that touches typer and rich, and the only
one that knows flags.

Each command is its options, one call into :mod:`lrrtool.jobs` with a request, and the
printing of what that call reports (:class:`~lrrtool.jobs.Update` values and the
report; :mod:`lrrtool.cli.display`). The library raises :class:`LRRError` for anything
the user can fix, naming parameters; that error becomes one red line with the parameters
worded as flags, and exit code 1; an option value outside its listed choices is the
argument parser's usage error, exit code 2; Ctrl-C exits with 130. Options several
commands share are declared once (:mod:`lrrtool.cli.base`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import torch
import typer

from lrrtool import __version__, jobs
from lrrtool.cli.base import (
    COMPLETION_OPTIONS,
    IMAGE_OPTIONS,
    RAY_OPTIONS,
    REPORT_OPTIONS,
    RUN_OPTIONS,
    SOLVER_OPTIONS,
    CompletionMethod,
    DeviceName,
    DeviceOpt,
    InpaintMethod,
    ModelName,
    OverwriteOpt,
    PresetName,
    PresetOpt,
    SeedOpt,
    SolverOpt,
    StartName,
    ThreadsOpt,
    app,
    command,
    console,
    given,
    outputs,
    pick,
    runtime,
)
from lrrtool.cli.display import announce_completion, announce_image, finish_batch, run, user_errors
from lrrtool.core import ESTIMATORS, PENALTIES, SERIES
from lrrtool.errors import LRRError
from lrrtool.recsys.settings import CompletionSettings
from lrrtool.tasks.denoise import DenoiseSettings
from lrrtool.tasks.inpaint import InpaintSettings
from lrrtool.video import WORK_PIXELS, SeparateSettings


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lrrtool {__version__} (torch {torch.__version__})")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Image and video restoration with differentiable low-rank regularisation."""


@app.command()
def penalties() -> None:
    """List the penalties h of --reg, their gamma units, the series and the estimators."""
    for name, cls in PENALTIES.items():
        extra = f"  (gamma in {cls.gamma_units})" if "gamma" in cls.parameters else ""
        extra += "  (p: the exponent)" if "p" in cls.parameters else ""
        typer.echo(f"{name:14} {cls.summary}{extra}")
    typer.echo("\nseries prefixes (e.g. laguerre-laplace):")
    for name, cls in SERIES.items():
        typer.echo(f"  {name + '-':12} {cls.summary}, degree {cls.default_degree}")
    typer.echo("\nestimators (--estimator, --solver adam): " + ", ".join(ESTIMATORS))


# ------------------------------------------------------------------ inpaint
WidthOpt = Annotated[int | None, typer.Option("--width", metavar="N", help="Factor width (--method dlrl).")]
ReachOpt = Annotated[
    int | None,
    typer.Option(
        "--reach",
        metavar="N",
        help="A clip's frames searched before and after each (default: denoise 9; inpaint 2).",
    ),
]
FactorsOpt = Annotated[int | None, typer.Option("--factors", metavar="N", help="Factors I (--method dlrl).")]
PBlockOpt = Annotated[
    float | None, typer.Option("--p-block", metavar="X", help="Schatten exponent of each factor (--method dlrl).")
]


@command(IMAGE_OPTIONS, SOLVER_OPTIONS, RUN_OPTIONS, REPORT_OPTIONS, RAY_OPTIONS)
def inpaint(
    images: Annotated[
        list[str],
        typer.Argument(metavar="IMAGE...", help="Image files or glob patterns; video files or folders of frames."),
    ],
    mask: Annotated[
        Path | None,
        typer.Option(
            "--mask",
            metavar="FILE",
            help="Mask image: white (or transparent) = fill; alpha: the image's transparent pixels.",
        ),
    ] = None,
    mask_dir: Annotated[
        Path | None, typer.Option("--mask-dir", metavar="DIR", help="Folder with a mask of the same name per image.")
    ] = None,
    drop: Annotated[
        float | None, typer.Option("--drop", metavar="F", help="Fill a seeded random fraction F of the pixels.")
    ] = None,
    invert_mask: Annotated[
        bool, typer.Option("--invert-mask", help="Black = fill (e.g. the TNNR benchmark masks).")
    ] = False,
    resize_mask: Annotated[
        bool, typer.Option("--resize-mask", help="Resize a mask of another size (nearest).")
    ] = False,
    method: Annotated[
        InpaintMethod,
        typer.Option(
            "--method",
            help="lrr: the low-rank solvers (default, measured best); dlrl: the DLRL paper's block network on "
            "the H x 3W matrix (--width, --factors, --p-block, --iters, --lr); measured far below lrr.",
        ),
    ] = InpaintMethod.lrr,
    solver: SolverOpt = None,
    preset: PresetOpt = PresetName.default,
    model: Annotated[
        ModelName | None,
        typer.Option(
            "--model", help="patches (default: groups of similar patches) or global (one matrix per channel)."
        ),
    ] = None,
    start: Annotated[
        StartName | None,
        typer.Option(
            "--start",
            help="auto (default for images): where the mask has holes wider than 9 px, start from a global rank-r "
            "completion when a held-out test finds it 2 dB better than biharmonic; biharmonic: always biharmonic; "
            "harmonic (default for clips): the membrane fill, which stays within the values around a hole.",
        ),
    ] = None,
    width: WidthOpt = None,
    factors: FactorsOpt = None,
    p_block: PBlockOpt = None,
    reach: ReachOpt = None,
    **shared,
) -> None:
    """Fill missing pixels (random drops, blocks, text) by low-rank completion.

    Observed pixels are copied to the output unchanged; only masked pixels are solved
    for. The fill starts from the biharmonic interpolant (or, for wide holes in
    structured images, a global rank-r completion: --start) and is refined by a
    low-rank prior on groups of similar 5x5 patches (6x6 and a stronger threshold where
    the mask is holes rather than scattered pixels and the start not a low-rank one; penalty
    --reg, default lnn: the WNNM weighting; a series prefix such as laguerre- is used by
    every solver). Colour
    channels share one low-rank structure (--model global treats them separately).
    Output: NAME.inpainted.png beside the input unless -o/--output-dir; existing outputs
    are skipped unless --overwrite; inputs are never overwritten.

    A clip (a video file, or a folder of frames) is filled from what its other frames show
    (aligned to the camera's motion) where they agree with the frame around the hole, the
    rest by the harmonic fill; scattered masks (drops, thin lines) are then refined with
    patch groups searched --reach frames each way, holes only with --iters (the steps
    measured no gain on them); --mask is one image for every frame, or a folder or video
    of masks. A video
    gives NAME.inpainted.mp4 (same size, rate, frames and audio), a folder a folder of PNG
    frames with the same names.
    """
    with user_errors():
        settings = InpaintSettings(
            method=method.value, seed=shared["seed"], preset=preset.value, **given(**pick(shared, SOLVER_OPTIONS)),
            **given(solver=solver, model=model, start=start, width=width, factors=factors, p_block=p_block),
            **given(reach=reach),
        )  # fmt: skip
        request = jobs.InpaintRequest(
            tuple(images), mask=mask, mask_dir=mask_dir, drop=drop, invert_mask=invert_mask, resize_mask=resize_mask,
            reference=shared["reference"], settings=settings, outputs=outputs(shared), runtime=runtime(shared),
            segment_frames=shared["segment_frames"],
        )  # fmt: skip
        report = run(jobs.inpaint, request, shared["quiet"], announce_image)
    finish_batch(report, shared["quiet"])


# ------------------------------------------------------------------ separate
@command(SOLVER_OPTIONS, RUN_OPTIONS, REPORT_OPTIONS, RAY_OPTIONS)
def separate(
    video: Annotated[
        Path, typer.Argument(metavar="VIDEO", help="Video file (any format ffmpeg reads) or folder of frames.")
    ],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", metavar="DIR", help="Default: NAME.separated/ beside the input.")
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", metavar="N", min=2, help="Use at most N frames.")
    ] = None,
    first_frame: Annotated[int, typer.Option("--first-frame", metavar="N", min=0, help="First frame to use.")] = 0,
    scale: Annotated[float | None, typer.Option("--scale", metavar="X", help="Downscale factor in (0, 1].")] = None,
    size: Annotated[str | None, typer.Option("--size", metavar="WxH", help="Frame size, e.g. 320x240.")] = None,
    grey: Annotated[bool, typer.Option("--grey", help="Process luminance only.")] = False,
    chunk_frames: Annotated[
        int | None,
        typer.Option(
            "--chunk-frames",
            metavar="N",
            min=2,
            help="Frames solved at once (default 200, fewer to stay within --memory-gib).",
        ),
    ] = None,
    memory_gib: Annotated[
        float, typer.Option("--memory-gib", metavar="X", min=0.25, help="Memory budget that sizes the chunks.")
    ] = 2.0,
    work_pixels: Annotated[
        int,
        typer.Option(
            "--work-pixels",
            metavar="N",
            min=0,
            help="Solve frames larger than N pixels on a copy of about N pixels and lift the background to full "
            "size (0: solve at full size).",
        ),
    ] = WORK_PIXELS,
    components: Annotated[
        int,
        typer.Option(
            "--components",
            metavar="N",
            min=0,
            help="Most temporal components of the background (0: as many as the solve finds; 1: one still scene "
            "under changing light, so an object that stops stays foreground while it covers under half a chunk).",
        ),
    ] = 0,
    outputs_: Annotated[
        str,
        typer.Option("--outputs", metavar="LIST", help="Videos to write, comma-separated: background,foreground,mask."),
    ] = "background,foreground,mask",
    solver: SolverOpt = None,
    frames: Annotated[bool, typer.Option("--frames", help="Also export PNG frames.")] = False,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = 1,
    segment_frames: Annotated[
        int | None,
        typer.Option(
            "--segment-frames",
            metavar="N",
            min=2,
            help="With --ray: frames per segment, one task each, rounded up to whole chunks (default: the frames "
            "shared over the cluster's task slots, the first two chunks longer, so every task solves as many frames). "
            "Each segment but the first first solves the two chunks before it, unwritten.",
        ),
    ] = None,
    **shared,
) -> None:
    """Split a video into a low-rank background and a sparse foreground.

    Solves min |V - X|_1 + lam R(X) with frames as columns (robust PCA), chunk by chunk
    (--chunk-frames), on a copy of about --work-pixels pixels per frame; the
    background's temporal components found there are fitted to every full-size pixel
    (robust L1 fit), so outputs keep the input's size. Ten background frames of each
    chunk join the next one as extra columns, so the background carries over, and each
    chunk also solves the next one's first 16 frames, over which the next one's
    background fades in from it, so a chunk border shows no step. Default
    weights are robust PCA's: |S|_1 / sqrt(max(D, T)) against R(L) (D values per frame,
    T frames); --lam scales that for --solver threshold and is the weight of R for
    --solver adam. Colour: all channels of a frame form one column. Writes
    background.mp4, foreground.mp4 (the moving objects: the frames' pixels under the
    mask, black elsewhere) and mask.mp4 (white = foreground: the residual, maxed over
    channels, above 4 robust standard deviations (1.4826 x its median, per frame and
    region), grown into neighbours above 2.5 of them: hysteresis, as in Canny). Warns
    when the background is not one still scene (a moving camera, a scene cut).
    """
    with user_errors():
        settings = SeparateSettings(
            seed=shared["seed"], work_pixels=work_pixels, components=components,
            **given(solver=solver, **pick(shared, SOLVER_OPTIONS)),
        )  # fmt: skip
        wh = None
        if size is not None:
            try:
                wh = tuple(int(v) for v in size.lower().split("x"))
            except ValueError:
                raise LRRError(f"--size must look like 320x240, got {size!r}") from None
        request = jobs.SeparateRequest(
            video, first_frame=first_frame, max_frames=max_frames, scale=scale, size=wh, grey=grey,
            chunk_frames=chunk_frames, videos=tuple(name.strip() for name in outputs_.split(",") if name.strip()),
            frames=frames, segment_frames=segment_frames, settings=settings,
            outputs=jobs.Outputs(output_dir=output_dir, overwrite=overwrite, report=shared["report"]),
            runtime=runtime({**shared, "threads": threads, "memory_gib": memory_gib}),
        )  # fmt: skip
        report = run(jobs.separate, request, shared["quiet"])
    if report.get("skipped"):
        return
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    if not shared["quiet"]:
        memory = f", peak memory {report['peak_memory_gib']:.2f} GiB" if report["peak_memory_gib"] else ""
        frames = f"{report['frames']} frame{'' if report['frames'] == 1 else 's'}"
        console.print(
            f"{video} -> {report['output_dir']}/ ({frames}, {report['seconds']:.1f} s, {report['fps']} fps{memory})"
        )


# ------------------------------------------------------------------ denoise
@command(IMAGE_OPTIONS, SOLVER_OPTIONS, RUN_OPTIONS, REPORT_OPTIONS, RAY_OPTIONS)
def denoise(
    images: Annotated[
        list[str],
        typer.Argument(metavar="IMAGE...", help="Noisy image files or glob patterns; videos or folders of frames."),
    ],
    sigma: Annotated[
        str, typer.Option("--sigma", metavar="X", help="Noise std in 0-255 units, or auto (wavelet MAD estimate).")
    ] = "auto",
    patch: Annotated[
        int | None, typer.Option("--patch", metavar="N", help="Patch side (default 6 for grey, 5 for colour).")
    ] = None,
    group: Annotated[
        int | None, typer.Option("--group", metavar="N", help="Patches per group (default 48 grey, 64 colour).")
    ] = None,
    solver: SolverOpt = None,
    preset: PresetOpt = PresetName.default,
    reach: ReachOpt = None,
    **shared,
) -> None:
    """Remove Gaussian noise with a low-rank prior on groups of similar patches.

    WNNM-style iterations (12 steps): groups of 48 similar 6x6 patches (grey) or 64
    similar 5x5 patches (colour, all channels jointly), found by exact search in a 31x31
    window, are shrunk by reweighted singular-value thresholding with weights h' of
    --reg (default lnn, WNNM's weighting), with the noise fed back and re-estimated.
    --solver adam runs the paper's gradient route instead. --sigma auto estimates the
    noise by the wavelet MAD rule and reports it.

    A clip (a video file, or a folder of frames) is denoised with groups of 32: the patch
    where the camera's motion takes it, 1 px around, in the --reach (9) frames before and
    after, and a 5x5 window in its own frame (a grey clip: 6x6 patches that span two
    frames), 6 steps; a video gives NAME.denoised.mp4 (same size, rate, frames and audio), a
    folder a folder of PNG frames with the same names.
    """
    with user_errors():
        settings = DenoiseSettings(
            seed=shared["seed"], preset=preset.value, **given(solver=solver, patch=patch, group=group, reach=reach),
            **given(**pick(shared, SOLVER_OPTIONS)),
        )  # fmt: skip
        level = None
        if sigma != "auto":
            try:
                level = float(sigma)
            except ValueError:
                raise LRRError(f"--sigma must be a number in 0-255 units or 'auto', got {sigma!r}") from None
        request = jobs.DenoiseRequest(
            tuple(images), sigma=level, reference=shared["reference"], settings=settings, outputs=outputs(shared),
            runtime=runtime(shared), segment_frames=shared["segment_frames"],
        )  # fmt: skip
        report = run(jobs.denoise, request, shared["quiet"], announce_image)
    finish_batch(report, shared["quiet"])


# ------------------------------------------------------------------ complete
@command(COMPLETION_OPTIONS, REPORT_OPTIONS)
def complete(
    ratings: Annotated[Path, typer.Argument(metavar="RATINGS", help="CSV with a header user,item,rating.")],
    predict: Annotated[
        Path | None, typer.Option("--predict", metavar="PAIRS", help="CSV with a header user,item: pairs to predict.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", metavar="FILE", help="Predictions CSV (default: PAIRS.predictions.csv)."),
    ] = None,
    overwrite: OverwriteOpt = False,
    method: Annotated[
        CompletionMethod,
        typer.Option(
            "--method",
            help="blend (default): mean of one lrr and two autorec models, the most accurate measured (the "
            "options set its lrr member); lrr: biases + low-rank part with a weighted --reg penalty (nuclear = "
            "weighted trace norm); autorec: item autoencoder (--width hidden units, --iters epochs, --lam weight "
            "decay); dlrl: the DLRL paper's block network (--factors, --p-block); mf: plain biased factorisation.",
        ),
    ] = CompletionMethod.blend,
    test_fraction: Annotated[
        float | None,
        typer.Option("--test-fraction", metavar="F", help="Hold out a seeded fraction F; report test RMSE/MAE."),
    ] = None,
    width: Annotated[
        int | None,
        typer.Option("--width", metavar="N", help="Factor width (lrr, mf, dlrl) or hidden units (autorec)."),
    ] = None,
    factors: FactorsOpt = None,
    p_block: PBlockOpt = None,
    lr: Annotated[float | None, typer.Option("--lr", metavar="X", help="Adam step size in (0, 1].")] = None,
    device: DeviceOpt = DeviceName.auto,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    **shared,
) -> None:
    """Complete a rating matrix: fit the observed ratings, predict user,item pairs.

    Ids may be any strings. Fitting uses every rating, or only the training part with
    --test-fraction (then test RMSE and MAE are printed and reported). Predictions are
    clipped to the range of the observed ratings. A user or item with no rating in the
    fitted data gets the bias model's prediction: global mean + the known side's bias
    (the global mean when both are unseen). Storage is sparse (only observed ratings).
    """
    with user_errors():
        settings = CompletionSettings(
            method=method.value, seed=seed, **given(width=width, factors=factors, p_block=p_block, lr=lr),
            **given(**pick(shared, SOLVER_OPTIONS)),
        )  # fmt: skip
        request = jobs.CompleteRequest(
            ratings, predict=predict, test_fraction=test_fraction, settings=settings,
            outputs=jobs.Outputs(output=output, overwrite=overwrite, report=shared["report"]),
            runtime=runtime({**shared, "device": device, "threads": threads}),
        )  # fmt: skip
        run(jobs.complete, request, shared["quiet"], announce_completion)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
