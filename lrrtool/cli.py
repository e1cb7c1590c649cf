"""The ``lrrtool`` command line: the only module that touches typer and rich.

Commands hold options and presentation only; the work is in ``lrrtool.tasks`` and
``lrrtool.media``, which raise :class:`LRRError` for anything the user can fix. That
error becomes one red line and exit code 1; Ctrl-C exits with 130.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from lrrtool import __version__
from lrrtool.core import ESTIMATORS, regularizer_names
from lrrtool.core import Progress as SolverProgress
from lrrtool.errors import LRRError
from lrrtool.tasks.completion import METHODS as COMPLETION_METHODS
from lrrtool.tasks.inpaint import INPAINT_METHODS

app = typer.Typer(
    name="lrrtool",
    help="Image and video restoration with differentiable low-rank regularisation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

RegName = Enum("RegName", {name: name for name in regularizer_names()}, type=str)
CompletionMethod = Enum("CompletionMethod", {name: name for name in COMPLETION_METHODS}, type=str)
InpaintMethod = Enum("InpaintMethod", {name: name for name in INPAINT_METHODS}, type=str)
EstimatorName = Enum("EstimatorName", {name: name for name in ESTIMATORS}, type=str)


class DeviceName(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class DTypeName(StrEnum):
    float32 = "float32"
    float64 = "float64"


# ------------------------------------------------------------------ shared options
RegOpt = Annotated[
    RegName | None,
    typer.Option("--reg", help="Penalty h; prefix taylor-/laguerre-/chebyshev- for a series.", case_sensitive=False),
]
LamOpt = Annotated[float | None, typer.Option("--lam", help="Weight of the low-rank term (default per command).")]
GammaOpt = Annotated[float | None, typer.Option("--gamma", help="Scale of non-convex penalties (units: see `--reg`).")]
POpt = Annotated[float | None, typer.Option("--p", help="Exponent of schatten-p.")]
IterOpt = Annotated[
    int | None, typer.Option("--iters", min=1, help="Maximum solver steps (default per command and solver).")
]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Adam step size, in pixel units [0, 1].")]
EstOpt = Annotated[EstimatorName, typer.Option("--estimator", help="How sum h(sigma) is computed.")]
DeviceOpt = Annotated[DeviceName, typer.Option("--device", help="auto = cuda when available.")]
DTypeOpt = Annotated[DTypeName, typer.Option("--dtype", help="Floating-point precision of the solve.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random choice (masks, probes).")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Write a JSON report here.", dir_okay=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


@dataclass
class Common:
    reg: str | None
    lam: float | None
    gamma: float | None
    p: float | None
    iters: int | None
    lr: float | None
    estimator: str
    device: str
    dtype: str
    seed: int
    report: Path | None
    quiet: bool

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise LRRError("--device cuda: no CUDA device is available (this torch build or machine has none)")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    def refuse_adam_options(self, solver: str, adam: str = "--solver adam") -> None:
        """``--lr`` and ``--estimator`` steer Adam only: refuse them with the threshold solver."""
        if solver == "threshold" and (self.lr is not None or self.estimator != EstimatorName.auto.value):
            raise LRRError(f"--lr and --estimator apply to {adam} only (threshold uses exact spectra)")

    def overrides(self) -> dict:
        """Settings the user gave explicitly (None = keep the command's default)."""
        given = {"reg": self.reg, "lam": self.lam, "gamma": self.gamma, "p": self.p, "iters": self.iters, "lr": self.lr}
        out = {k: v for k, v in given.items() if v is not None}
        out["estimator"] = self.estimator
        out["seed"] = self.seed
        if self.lam is not None and self.lam < 0:
            raise LRRError(f"--lam must be >= 0, got {self.lam}")
        if self.lr is not None and not self.lr > 0:
            raise LRRError(f"--lr must be > 0, got {self.lr}")
        return out


def common(reg, lam, gamma, p, iters, lr, estimator, device, dtype, seed, report, quiet) -> Common:
    return Common(
        reg.value if reg is not None else None,
        lam,
        gamma,
        p,
        iters,
        lr,
        estimator.value,
        device.value,
        dtype.value,
        seed,
        report,
        quiet,
    )


# ------------------------------------------------------------------ helpers
@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except LRRError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


@contextmanager
def progress_bar(quiet: bool, label: str) -> Iterator[Callable[[SolverProgress], None] | None]:
    if quiet:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.5g}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None, loss=float("nan"))

        def update(p: SolverProgress) -> None:
            bar.update(task, total=p.total, completed=p.iteration, loss=p.loss)

        yield update


def expand_inputs(patterns: list[str]) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise LRRError(f"{pattern}: no file matches")
        paths += [Path(m) for m in matches]
    return paths


def output_path(source: Path, output: Path | None, output_dir: Path | None, suffix: str, many: bool) -> Path:
    if output is not None and many:
        raise LRRError("-o names one file; with several inputs use --output-dir")
    if output is not None:
        return output
    folder = source.parent if output_dir is None else output_dir
    if output_dir is not None:
        if output_dir.exists() and not output_dir.is_dir():
            raise LRRError(f"{output_dir}: exists and is not a folder")
        output_dir.mkdir(parents=True, exist_ok=True)
    return folder / f"{source.stem}.{suffix}.png"


def write_report(path: Path | None, report: dict, protect: list[Path]) -> None:
    if path is None:
        return
    from lrrtool.media import atomic_path

    with atomic_path(path, protect) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")


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


def skipped(path: Path, target: Path, overwrite: bool, explicit_output: bool) -> dict | None:
    """The report entry of an input whose default output already exists (said on the
    console), or None when it is to be written: ``-o`` and ``--overwrite`` always write."""
    if explicit_output or overwrite or not target.exists():
        return None
    console.print(f"skip {path}: {target} exists (use --overwrite)")
    return {"input": str(path), "output": str(target), "skipped": True}


def run_batch(inputs: list[Path], process: Callable[[Path], dict], quiet: bool) -> tuple[list[dict], int]:
    """Run ``process`` on each input; a failed input is reported and the others go on."""
    results, failed = [], 0
    for path in inputs:
        try:
            results.append(process(path))
        except LRRError as error:
            failed += 1
            console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            results.append({"input": str(path), "error": str(error)})
    if len(inputs) > 1 and not quiet:
        console.print(f"{len(inputs) - failed} of {len(inputs)} inputs done, {failed} failed")
    return results, failed


# ------------------------------------------------------------------ inpaint
# Options of the DLRL method, shared by inpaint and complete.
WidthOpt = Annotated[int | None, typer.Option("--width", min=1, help="Factor width d (default 20; inpaint 80).")]
FactorsOpt = Annotated[int, typer.Option("--factors", min=2, help="DLRL: number of factors I.")]
PBlockOpt = Annotated[
    float, typer.Option("--p-block", help="DLRL: Schatten exponent p_i of every factor (1/p = I/p_i).")
]


@app.command()
def inpaint(
    images: Annotated[list[str], typer.Argument(help="Image files or glob patterns.")],
    mask: Annotated[Path | None, typer.Option("--mask", help="Mask image: white (or transparent) = fill.")] = None,
    mask_dir: Annotated[
        Path | None, typer.Option("--mask-dir", help="Folder with a mask of the same name per image.")
    ] = None,
    drop: Annotated[
        float | None, typer.Option("--drop", help="Fill a seeded random fraction of pixels (experiments).")
    ] = None,
    invert_mask: Annotated[
        bool, typer.Option("--invert-mask", help="Black = fill (e.g. the TNNR benchmark masks).")
    ] = False,
    resize_mask: Annotated[
        bool, typer.Option("--resize-mask", help="Resize a mask of another size (nearest).")
    ] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output file (one input).")] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Folder for outputs (several inputs).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs (default: skip them).")
    ] = False,
    model: Annotated[
        str, typer.Option("--model", help="patches (non-local groups) or global (paper: one matrix per channel).")
    ] = "patches",
    start: Annotated[
        str,
        typer.Option(
            "--start",
            help="auto: where the mask has holes wider than 9 px, fill them by a global rank-r completion "
            "when a held-out test (the hole shifted onto known pixels) finds it 2 dB better than "
            "biharmonic; biharmonic: always the biharmonic interpolant. The choice is in the report.",
        ),
    ] = "auto",
    solver: Annotated[
        str,
        typer.Option(
            "--solver",
            help="threshold: exact reweighted singular-value thresholding (default, 16 steps, lam 4); "
            "adam: the paper's gradient route with --estimator (200 steps, lam 0.3).",
        ),
    ] = "threshold",
    method: Annotated[
        InpaintMethod,
        typer.Option(
            "--method",
            help="lrr: the low-rank solvers above (default, measured best); dlrl: the DLRL paper's "
            "block network on the H x 3W matrix (--factors, --width, --p-block; --iters default 500, --lr 0.005); "
            "measured far below lrr (bench/inpaint.py --dlrl).",
        ),
    ] = InpaintMethod.lrr,
    width: WidthOpt = None,
    factors: Annotated[int, typer.Option("--factors", min=2, help="DLRL: number of factors I (inpaint: 2).")] = 2,
    p_block: PBlockOpt = 1.0,
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Clean image: adds PSNR/SSIM to the report.")
    ] = None,
    reg: RegOpt = None,
    lam: LamOpt = None,
    gamma: GammaOpt = None,
    p: POpt = None,
    iters: IterOpt = None,
    lr: LrOpt = None,
    estimator: EstOpt = EstimatorName.auto,
    device: DeviceOpt = DeviceName.auto,
    dtype: DTypeOpt = DTypeName.float32,
    seed: SeedOpt = 0,
    report: ReportOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fill missing pixels (random drops, blocks, text) by low-rank completion.

    Observed pixels are copied to the output unchanged; only masked pixels are solved
    for. The fill starts from the biharmonic interpolant (or, for wide holes in
    structured images, a global rank-r completion: --start) and is refined by a
    low-rank prior on groups of similar 5x5 patches (penalty --reg, default lnn: the
    WNNM weighting). Colour images are handled jointly: every patch vector holds all
    channels, so colours share one low-rank structure (--model global treats channels
    separately). The threshold solver uses exact spectra: --estimator and a series
    prefix in --reg matter to --solver adam only; its progress shows the RMS change.
    Output: NAME.inpainted.png beside the input unless -o/--output-dir; existing outputs
    are skipped unless --overwrite; inputs are never overwritten.
    """
    from lrrtool import media
    from lrrtool.metrics import psnr, ssim
    from lrrtool.tasks.inpaint import InpaintSettings
    from lrrtool.tasks.inpaint import inpaint as run_inpaint

    opts = common(reg, lam, gamma, p, iters, lr, estimator, device, dtype, seed, report, quiet)
    with user_errors():
        given = sum(x is not None for x in (mask, mask_dir, drop))
        if given != 1:
            raise LRRError("give exactly one of --mask, --mask-dir or --drop")
        if drop is not None and not 0 < drop < 1:
            raise LRRError(f"--drop must be a fraction in (0, 1), got {drop}")
        method = method.value
        chosen = {
            "model": model,
            "solver": solver,
            "method": method,
            "factors": factors,
            "p_block": p_block,
            "start": start,
        }
        if width is not None:
            chosen["width"] = width
        overrides = opts.overrides()
        if method == "dlrl":  # DLRL has its own step count and step size
            chosen["dlrl_iters"] = overrides.pop("iters", InpaintSettings.dlrl_iters)
            chosen["dlrl_lr"] = overrides.pop("lr", InpaintSettings.dlrl_lr)
        settings = InpaintSettings(**{**asdict(InpaintSettings()), **overrides, **chosen})
        settings.validate()
        settings = settings.resolved()
        if method != "dlrl":
            opts.refuse_adam_options(settings.solver)
        settings.regularizer()  # reject bad --reg/--gamma/--p before any work
        dev, dt = opts.torch_device(), opts.torch_dtype()
        inputs = expand_inputs(images)
        protect = list(inputs) + [x for x in (mask, reference) if x is not None]

        def process(path: Path) -> dict:
            target = output_path(path, output, output_dir, "inpainted", len(inputs) > 1)
            media.check_output(target, protect)
            if (entry := skipped(path, target, overwrite, output is not None)) is not None:
                return entry
            image = media.read_image(path)
            size = tuple(image.shape[-2:])
            if drop is not None:
                gen = torch.Generator().manual_seed(seed)
                fill = torch.rand(size, generator=gen) < drop
            else:
                mask_path = mask if mask is not None else mask_dir / path.name
                if mask_path is not None and not mask_path.exists() and mask_dir is not None:
                    candidates = sorted(mask_dir.glob(path.stem + ".*"))
                    if not candidates:
                        raise LRRError(f"{mask_dir}: no mask named {path.stem}.*")
                    mask_path = candidates[0]
                fill = media.read_mask(mask_path, size, invert=invert_mask, resize=resize_mask)
            started = time.perf_counter()
            with progress_bar(quiet, f"inpaint {path.name}") as callback:
                result, solve = run_inpaint(image.to(dev, dt), fill.to(dev), settings, callback=callback)
            seconds = time.perf_counter() - started
            media.write_image(target, result, protect=protect)
            entry = {
                "input": str(path),
                "output": str(target),
                "missing_fraction": float(fill.float().mean()),
                "seconds": round(seconds, 3),
                "iterations": solve.iterations,
                "final_loss": solve.loss,
                "converged": solve.converged,
                **solve.details,
            }
            if reference is not None:
                clean = media.read_image(reference)
                if clean.shape != image.shape:
                    raise LRRError(f"{reference}: shape {tuple(clean.shape)} differs from {path} {tuple(image.shape)}")
                out = result.float().cpu()
                entry["metrics"] = {
                    "psnr": psnr(out, clean),
                    "psnr_missing": psnr(out, clean, fill),
                    "ssim": ssim(out, clean),
                }
            if not quiet:
                extra = f", PSNR {entry['metrics']['psnr']:.2f} dB" if "metrics" in entry else ""
                console.print(f"{path} -> {target} ({seconds:.1f} s, {solve.iterations} steps{extra})")
            return entry

        results, failed = run_batch(inputs, process, quiet)
        write_report(
            opts.report,
            {
                "command": "inpaint",
                "version": __version__,
                "settings": asdict(settings),
                "device": str(dev),
                "dtype": str(dt),
                "results": results,
            },
            protect,
        )
        if failed:
            raise typer.Exit(1)


# ------------------------------------------------------------------ separate
MEMORY_FRAMES = 10  # background frames carried from one chunk to the next


@app.command()
def separate(
    video: Annotated[Path, typer.Argument(help="Video file (any format ffmpeg reads) or folder of frames.")],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Default: NAME.separated/ beside the input.")
    ] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1)] = None,
    start: Annotated[int, typer.Option("--start", min=0, help="First frame to use.")] = 0,
    scale: Annotated[float | None, typer.Option("--scale", help="Downscale factor in (0, 1].")] = None,
    size: Annotated[str | None, typer.Option("--size", help="Frame size WxH.")] = None,
    grey: Annotated[bool, typer.Option("--grey", help="Process luminance only.")] = False,
    chunk_frames: Annotated[
        int | None,
        typer.Option(
            "--chunk-frames",
            min=2,
            help="Frames solved at once (default: 200, fewer when the frames are large, to stay within --memory-gib).",
        ),
    ] = None,
    memory_gib: Annotated[
        float, typer.Option("--memory-gib", min=0.25, help="Working-memory budget that sizes the chunks.")
    ] = 2.0,
    solver: Annotated[
        str,
        typer.Option(
            "--solver", help="threshold: robust-PCA inexact ALM with exact spectra (default); adam: the paper's route."
        ),
    ] = "threshold",
    frames: Annotated[bool, typer.Option("--frames", help="Also export PNG frames.")] = False,
    reg: RegOpt = None,
    lam: LamOpt = None,
    gamma: GammaOpt = None,
    p: POpt = None,
    iters: IterOpt = None,
    lr: LrOpt = None,
    estimator: EstOpt = EstimatorName.auto,
    device: DeviceOpt = DeviceName.auto,
    dtype: DTypeOpt = DTypeName.float32,
    seed: SeedOpt = 0,
    report: ReportOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Split a video into a low-rank background and a sparse foreground.

    Solves min |V - X|_1 + lam R(X) with frames as columns (robust PCA), chunk by chunk
    (--chunk-frames); ten background frames of each chunk join the next one as extra
    columns, so the background carries over. Default weights are robust PCA's:
    |S|_1 / sqrt(max(D, T)) against R(L) (D values per frame, T frames); --lam scales
    that for --solver threshold and is the weight of R for --solver adam. Colour: all
    channels of a frame form one column. Writes background.mp4, foreground.mp4
    (|V - X|, brightened 4x) and mask.mp4 (white = foreground: the residual, maxed over
    channels, above 4 robust standard deviations (1.4826 x its median over the chunk),
    grown into neighbours above 2.5 of them: hysteresis, as in Canny).
    """
    from lrrtool import media
    from lrrtool.tasks.separate import WORKING_COPIES, SeparateSettings
    from lrrtool.tasks.separate import separate as run_separate

    opts = common(reg, lam, gamma, p, iters, lr, estimator, device, dtype, seed, report, quiet)
    with user_errors():
        overrides = opts.overrides()
        settings = SeparateSettings(**{**asdict(SeparateSettings()), **overrides, "solver": solver})
        settings.validate()
        settings = settings.resolved()
        opts.refuse_adam_options(settings.solver)
        settings.regularizer()
        dev, dt = opts.torch_device(), opts.torch_dtype()
        wh = None
        if size is not None:
            try:
                w, h = (int(v) for v in size.lower().split("x"))
            except ValueError:
                raise LRRError(f"--size must look like 320x240, got {size!r}") from None
            wh = (w, h)
        folder = output_dir or video.with_name(video.stem + ".separated")
        if folder.exists() and not folder.is_dir():
            raise LRRError(f"{folder}: exists and is not a folder")
        if not video.exists():
            raise LRRError(f"{video}: no such file or folder")
        folder.mkdir(parents=True, exist_ok=True)
        started, writers, total, empty, results = time.perf_counter(), None, 0, 0, []
        background = None
        ok = False
        try:
            geometry = media.video_geometry(video, scale=scale, size=wh, grey=grey)
            per_frame = geometry[0] * geometry[1] * geometry[2] * torch.finfo(dt).bits // 8
            budget = int(memory_gib * 2**30 // (per_frame * WORKING_COPIES[settings.solver]))
            if budget < 2 + MEMORY_FRAMES:
                raise LRRError(
                    f"frames of {geometry[2]}x{geometry[1]} do not fit --memory-gib {memory_gib}: "
                    "use --scale/--size, --grey or a larger budget"
                )
            chunk_size = min(chunk_frames or 200, budget - MEMORY_FRAMES)
            chunks = media.read_video_chunks(
                video, chunk_frames=chunk_size, start=start, max_frames=max_frames, scale=scale, size=wh, grey=grey
            )
            for index, (chunk, fps) in enumerate(chunks):
                if writers is None:
                    writers = {
                        n: media.VideoWriter(folder / f"{n}.mp4", fps, protect=[video])
                        for n in ("background", "foreground", "mask")
                    }
                x = chunk.to(dev, dt)
                with progress_bar(quiet, f"chunk {index + 1}") as callback:
                    bg, fg, mask, solve = run_separate(x, settings, memory=background, callback=callback)
                background = bg[torch.linspace(0, bg.shape[0] - 1, MEMORY_FRAMES).round().long().unique()]
                writers["background"].append(bg)
                writers["foreground"].append((fg.abs() * 4).clamp(0, 1))
                writers["mask"].append(mask[:, None].to(dt))
                if frames:
                    for t in range(chunk.shape[0]):
                        for name, data in (("background", bg[t]), ("mask", mask[t][None].to(dt))):
                            media.write_image(folder / f"{name}_{total + t:05d}.png", data)
                fraction = float(mask.float().mean())
                empty += fraction < 1e-4 or fraction > 0.9
                results.append(
                    {
                        "chunk": index,
                        "frames": chunk.shape[0],
                        "iterations": solve.iterations,
                        "final_loss": solve.loss,
                        "foreground_fraction": fraction,
                    }
                )
                total += chunk.shape[0]
            ok = True
        finally:
            if writers:
                for w in writers.values():
                    w.close(ok)
        if empty:
            console.print(
                f"[yellow]warning:[/] the foreground came out empty or nearly everything "
                f"in {empty} chunk(s); adjust --lam"
            )
        seconds = time.perf_counter() - started
        if not quiet:
            console.print(f"{video} -> {folder}/ ({total} frames, {seconds:.1f} s)")
        write_report(
            opts.report,
            {
                "command": "separate",
                "version": __version__,
                "input": str(video),
                "output_dir": str(folder),
                "frames": total,
                "seconds": round(seconds, 3),
                "settings": asdict(settings),
                "chunks": results,
            },
            [video],
        )


# ------------------------------------------------------------------ denoise
@app.command()
def denoise(
    images: Annotated[list[str], typer.Argument(help="Noisy image files or glob patterns.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output file (one input).")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir")] = None,
    sigma: Annotated[
        str, typer.Option("--sigma", help="Noise std in 0-255 units, or 'auto' (wavelet MAD estimate).")
    ] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Clean image: adds PSNR/SSIM to the report.")
    ] = None,
    patch: Annotated[
        int | None, typer.Option("--patch", min=2, help="Patch side (default 6 for grey, 5 for colour).")
    ] = None,
    group: Annotated[
        int | None, typer.Option("--group", min=2, help="Similar patches per group (default 48 grey, 64 colour).")
    ] = None,
    reg: RegOpt = None,
    lam: LamOpt = None,
    gamma: GammaOpt = None,
    p: POpt = None,
    iters: IterOpt = None,
    lr: LrOpt = None,
    estimator: EstOpt = EstimatorName.auto,
    device: DeviceOpt = DeviceName.auto,
    dtype: DTypeOpt = DTypeName.float32,
    seed: SeedOpt = 0,
    report: ReportOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Remove Gaussian noise with a low-rank prior on groups of similar patches.

    WNNM-style iterations (12 steps): groups of 48 similar 6x6 patches (grey) or 64
    similar 5x5 patches (colour, all channels jointly), found by exact search in a 31x31
    window, are shrunk by reweighted singular-value thresholding with weights h' of
    --reg (default lnn, WNNM's weighting), with the noise fed back and re-estimated.
    --sigma auto estimates the noise by the wavelet MAD rule and reports it.
    """
    from lrrtool import media
    from lrrtool.metrics import psnr, ssim
    from lrrtool.tasks.denoise import DenoiseSettings, estimate_sigma
    from lrrtool.tasks.denoise import denoise as run_denoise

    opts = common(reg, lam, gamma, p, iters, lr, estimator, device, dtype, seed, report, quiet)
    with user_errors():
        settings = DenoiseSettings(**{**asdict(DenoiseSettings()), **opts.overrides(), "patch": patch, "group": group})
        settings.validate()
        settings = settings.resolved()
        opts.refuse_adam_options(settings.solver, adam="the adam solver (Python API)")
        settings.regularizer()
        if sigma != "auto":
            try:
                sigma_value = float(sigma)
            except ValueError:
                raise LRRError(f"--sigma must be a number in 0-255 units or 'auto', got {sigma!r}") from None
            if not 0 < sigma_value < 255:
                raise LRRError(f"--sigma must be in (0, 255), got {sigma_value}")
        dev, dt = opts.torch_device(), opts.torch_dtype()
        inputs = expand_inputs(images)
        protect = list(inputs) + ([reference] if reference else [])

        def process(path: Path) -> dict:
            target = output_path(path, output, output_dir, "denoised", len(inputs) > 1)
            media.check_output(target, protect)
            if (entry := skipped(path, target, overwrite, output is not None)) is not None:
                return entry
            noisy = media.read_image(path)
            level = estimate_sigma(noisy) if sigma == "auto" else sigma_value / 255
            started = time.perf_counter()
            with progress_bar(quiet, f"denoise {path.name}") as callback:
                clean, solve = run_denoise(noisy.to(dev, dt), level, settings, callback=callback)
            media.write_image(target, clean, protect=protect)
            entry = {
                "input": str(path),
                "output": str(target),
                "sigma_255": round(level * 255, 3),
                "sigma_estimated": sigma == "auto",
                "seconds": round(time.perf_counter() - started, 3),
                "iterations": solve.iterations,
                "final_loss": solve.loss,
            }
            if reference is not None:
                ref = media.read_image(reference)
                if ref.shape != noisy.shape:
                    raise LRRError(f"{reference}: shape {tuple(ref.shape)} differs from {path} {tuple(noisy.shape)}")
                entry["metrics"] = {
                    "psnr": psnr(clean.float().cpu(), ref),
                    "ssim": ssim(clean.float().cpu(), ref),
                    "psnr_input": psnr(noisy, ref),
                }
            if not quiet:
                console.print(f"{path} -> {target} (sigma {level * 255:.1f}/255, {entry['seconds']:.1f} s)")
            return entry

        results, failed = run_batch(inputs, process, quiet)
        write_report(
            opts.report,
            {"command": "denoise", "version": __version__, "settings": asdict(settings), "results": results},
            protect,
        )
        if failed:
            raise typer.Exit(1)


# ------------------------------------------------------------------ complete
MethodOpt = Annotated[
    CompletionMethod,
    typer.Option(
        "--method",
        help="blend (default): mean of one lrr and two I-AutoRec models, the most accurate measured; "
        "lrr: biases + low-rank part with a weighted --reg penalty (nuclear = weighted trace norm); "
        "autorec: item autoencoder; dlrl: the DLRL paper's block network (--factors, --p-block); "
        "mf: plain biased factorisation.",
    ),
]


@app.command()
def complete(
    ratings: Annotated[Path, typer.Argument(help="CSV with a header user,item,rating.")],
    predict: Annotated[
        Path | None, typer.Option("--predict", help="CSV with a header user,item: the pairs to predict.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Predictions CSV (default: PAIRS.predictions.csv).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing default output.")] = False,
    method: MethodOpt = CompletionMethod.blend,
    test_fraction: Annotated[
        float | None,
        typer.Option("--test-fraction", help="Hold out this seeded fraction of ratings and report test RMSE/MAE."),
    ] = None,
    width: WidthOpt = None,
    factors: FactorsOpt = 4,
    p_block: PBlockOpt = 1.0,
    reg: RegOpt = None,
    lam: LamOpt = None,
    gamma: GammaOpt = None,
    p: POpt = None,
    iters: IterOpt = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Adam step size (default per method).")] = None,
    device: DeviceOpt = DeviceName.auto,
    seed: SeedOpt = 0,
    report: ReportOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Complete a rating matrix: fit the observed ratings, predict user,item pairs.

    Ids may be any strings. Fitting uses every rating, or only the training part with
    --test-fraction (then test RMSE and MAE are printed and reported). Predictions are
    clipped to the range of the observed ratings. A user or item with no rating in the
    fitted data gets the bias model's prediction: global mean + the known side's bias
    (the global mean when both are unseen). Storage is sparse (only observed ratings).
    """
    from lrrtool import media, tables
    from lrrtool.tasks.completion import CompletionSettings, RatingMatrix, rating_errors
    from lrrtool.tasks.completion import complete as run_complete

    opts = common(reg, lam, gamma, p, iters, lr, EstimatorName.auto, device, DTypeName.float32, seed, report, quiet)
    with user_errors():
        if predict is None and test_fraction is None:
            raise LRRError("nothing to do: give --predict PAIRS.csv and/or --test-fraction F")
        if output is not None and predict is None:
            raise LRRError("-o needs --predict PAIRS.csv (the pairs to write predictions for)")
        fields = {
            "method": method.value,
            "width": width or CompletionSettings.width,
            "factors": factors,
            "p_block": p_block,
        }
        settings = CompletionSettings(**{**asdict(CompletionSettings()), **opts.overrides(), **fields})
        settings.validate()
        settings = settings.resolved()
        settings.regularizer()  # reject bad --reg/--gamma/--p before any work
        protect = [x for x in (ratings, predict) if x is not None]
        target = None
        if predict is not None:
            target = output if output is not None else predict.with_name(f"{predict.stem}.predictions.csv")
            media.check_output(target, protect)
            if output is None and target.exists() and not overwrite:
                raise LRRError(f"{target} exists (use --overwrite or -o)")
        columns = tables.read_ratings(ratings)
        pairs = tables.read_pairs(predict) if predict is not None else None
        data = RatingMatrix(columns.users, columns.items, columns.ratings, device=opts.torch_device())
        train, test = data.entries, None
        if test_fraction is not None:
            train, test = train.split(test_fraction, torch.Generator().manual_seed(seed))
        low, high = float(train.values.min()), float(train.values.max())
        started = time.perf_counter()
        with progress_bar(quiet, f"complete {ratings.name}") as callback:
            model, solve = run_complete(train, settings, callback=callback)
        entry: dict = {
            "ratings": str(ratings),
            "users": train.shape[0],
            "items": train.shape[1],
            "observed": len(data.entries),
            "train": len(train),
            "rating_range": [low, high],
            "seconds": round(time.perf_counter() - started, 3),
            "iterations": solve.iterations,
            "final_loss": solve.loss,
        }
        if test is not None:
            predicted = model.predict(test.rows, test.cols).clamp(low, high)
            entry["test"] = {"count": len(test), **rating_errors(predicted, test.values)}
            entry["test"]["fallback"] = int((~model.seen(test.rows, test.cols)).sum())
            if not quiet:
                t = entry["test"]
                console.print(
                    f"test RMSE {t['rmse']:.4f}, MAE {t['mae']:.4f} on {t['count']} held-out ratings "
                    f"({t['fallback']} by the bias fallback), {entry['seconds']:.1f} s"
                )
        if pairs is not None:
            rows, cols = data.encode(pairs.users, pairs.items)
            values = model.predict(rows, cols).clamp(low, high).cpu().tolist()
            tables.write_predictions(target, pairs.users, pairs.items, values, protect=protect)
            entry["predict"] = str(predict)
            entry["output"] = str(target)
            entry["predicted"] = len(values)
            entry["fallback"] = int((~model.seen(rows, cols)).sum())
            if not quiet:
                console.print(f"{len(values)} predictions -> {target} ({entry['fallback']} by the bias fallback)")
        write_report(
            opts.report,
            {"command": "complete", "version": __version__, "settings": asdict(settings), "results": [entry]},
            protect + ([target] if target is not None else []),
        )


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
