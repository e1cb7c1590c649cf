"""The ``lrrtool`` command line: the only module that touches typer and rich.

Each command is its options and one call into the library per input
(:mod:`lrrtool.app`); the library raises :class:`LRRError` for anything the user can
fix. That error becomes one red line (a library parameter's name replaced by its flag)
and exit code 1; an option value outside its listed choices is the argument parser's
usage error, exit code 2; Ctrl-C exits with 130.

Threads: ``--threads`` (default 1) sets torch's CPU threads before any work. Several
OpenMP threads spin-wait for each other, and beside another busy process (``xargs -P``,
GNU parallel, a second run) that has taken the same run from 4 s to over 130 s here;
one thread per process is steady (``README``, "Threads").
"""

from __future__ import annotations

import glob
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lrrtool import __version__
from lrrtool.core import ESTIMATORS, PENALTIES, SERIES, regularizer_names
from lrrtool.errors import LRRError
from lrrtool.recsys.completion import METHODS as COMPLETION_METHODS
from lrrtool.solvers import SOLVERS
from lrrtool.solvers import Callback as SolverCallback
from lrrtool.solvers import Progress as SolverProgress
from lrrtool.tasks.inpaint import INPAINT_METHODS, MODELS, STARTS
from lrrtool.tasks.settings import PRESETS
from lrrtool.video import WORK_PIXELS
from lrrtool.workers import workers

app = typer.Typer(
    name="lrrtool",
    help="Image and video restoration with differentiable low-rank regularisation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 80},
)
#: Lines are never wrapped (piped output keeps one line per message).
console = Console(stderr=True, soft_wrap=True)
# Typer prints an argument's Python type after its name ("IMAGE... <list[str]>"); an
# argument with a metavar shows just the metavar, as options do.
_argument_type = typer.core.TyperArgument.display_type_rich
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None if self.metavar else _argument_type(self, ctx)


def choices(name: str, values) -> type[Enum]:
    """A str Enum of registry names: typer shows them and refuses others (exit 2)."""
    return Enum(name, {v: v for v in values}, type=str)


RegName = choices("RegName", regularizer_names())
EstimatorName = choices("EstimatorName", ESTIMATORS)
SolverName = choices("SolverName", SOLVERS)
ModelName = choices("ModelName", MODELS)
StartName = choices("StartName", STARTS)
InpaintMethod = choices("InpaintMethod", INPAINT_METHODS)
CompletionMethod = choices("CompletionMethod", COMPLETION_METHODS)
PresetName = choices("PresetName", PRESETS)
DeviceName = choices("DeviceName", ("auto", "cpu", "cuda"))
DTypeName = choices("DTypeName", ("float32", "float64"))

# ------------------------------------------------------------------ shared options
RegOpt = Annotated[
    RegName | None,
    typer.Option(
        "--reg",
        metavar="PENALTY",
        help="Penalty h, optionally with a series prefix: laguerre-laplace (list: lrrtool penalties).",
    ),
]
LamOpt = Annotated[float | None, typer.Option("--lam", metavar="X", help="Weight of the low-rank term.")]
GammaOpt = Annotated[
    float | None, typer.Option("--gamma", metavar="X", help="Scale of a non-convex penalty (lrrtool penalties).")
]
POpt = Annotated[float | None, typer.Option("--p", metavar="X", help="Exponent of schatten-p.")]
IterOpt = Annotated[int | None, typer.Option("--iters", metavar="N", help="Most solver steps.")]
LrOpt = Annotated[
    float | None, typer.Option("--lr", metavar="X", help="Adam step size in (0, 1], pixel units (--solver adam).")
]
EstOpt = Annotated[
    EstimatorName | None, typer.Option("--estimator", help="How Adam computes R (--solver adam; default auto).")
]
SolverOpt = Annotated[
    SolverName | None,
    typer.Option("--solver", help="threshold: exact spectral shrinkage (default); adam: the paper's route."),
]
PresetOpt = Annotated[
    PresetName,
    typer.Option("--preset", help="Speed/quality trade-off of the threshold solver (README: presets)."),
]
DeviceOpt = Annotated[DeviceName, typer.Option("--device", help="auto: cuda when available.")]
DTypeOpt = Annotated[DTypeName, typer.Option("--dtype", help="Precision of the solve.")]
SeedOpt = Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the random choices (drops, probes).")]
ThreadsOpt = Annotated[
    int, typer.Option("--threads", metavar="N", min=0, help="CPU threads; 0 = all cores (default 1, see README).")
]
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--threads", metavar="N", min=0, help="CPU threads (workers that share the tiles); 0 = all cores (default)."
    ),
]
MemoryOpt = Annotated[
    float,
    typer.Option(
        "--memory-gib", metavar="X", min=0.25, help="Memory budget of the process; sizes the tiles of patch groups."
    ),
]
ReportOpt = Annotated[
    Path | None, typer.Option("--report", metavar="FILE", help="Write a JSON report here.", dir_okay=False)
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
RayOpt = Annotated[
    bool,
    typer.Option(
        "--ray",
        help="Run each input as a task on Ray (the ray extra): RAY_ADDRESS or --ray-address, else a local instance.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", metavar="ADDRESS", help="Ray cluster for --ray (host:port or ray://host:port)."),
]
OutputOpt = Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE", help="Output file (one input).")]
OutputDirOpt = Annotated[Path | None, typer.Option("--output-dir", metavar="DIR", help="Folder for the outputs.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (default: skip them).")]
ReferenceOpt = Annotated[
    Path | None, typer.Option("--reference", metavar="FILE", help="Clean image: PSNR/SSIM on screen and in the report.")
]


def given(**options) -> dict[str, object]:
    """The options the user set (not None), enum choices as their values."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in options.items() if v is not None}


def set_threads(threads: int, *, shared: bool = False) -> None:
    """Use ``threads`` CPU threads (0: every core): torch's own, or with ``shared`` that
    many workers that share the work (:mod:`lrrtool.workers`), each with one torch thread,
    which keep their speed beside other busy processes."""
    from lrrtool import app as jobs
    from lrrtool import workers

    if shared:
        jobs.one_heap()
    count = threads or workers.cpu_count()
    torch.set_num_threads(1 if shared else count)
    workers.set_workers(count if shared else None)


def torch_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LRRError("--device cuda: no CUDA device is available (this torch build or machine has none)")
    return torch.device(name)


def torch_dtype(name: str) -> torch.dtype:
    return torch.float64 if name == "float64" else torch.float32


# ------------------------------------------------------------------ helpers
def flag_message(error: LRRError) -> str:
    """The error's message with its leading parameter name replaced by the flag."""
    message = str(error)
    if error.parameter and message.startswith(error.parameter + " "):
        flag = "--" + error.parameter.replace("_", "-")
        message = flag + message[len(error.parameter) :]
    return message


def print_error(error: LRRError) -> None:
    console.print(f"[bold red]error:[/] {escape(flag_message(error))}", highlight=False, soft_wrap=True, markup=True)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except LRRError as error:
        print_error(error)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def progress_bars(quiet: bool, place: str = "") -> Callable[[str], contextmanager]:
    """A factory of labelled progress bars (``lrrtool.app.ProgressFactory``), one per phase
    with its steps, a step's parts as they finish, and the time left; ``place`` says
    which input of a batch it is (``[2/5] ``)."""

    @contextmanager
    def bar(label: str) -> Iterator[SolverCallback | None]:
        if quiet:
            yield None
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[steps]}"),
            TextColumn("{task.fields[metric]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as display:
            task = display.add_task(f"{place}{label}", total=1, steps="", metric="")
            phase = [""]

            def update(p: SolverProgress) -> None:
                if p.phase != phase[0]:  # a new phase: its own bar and time left
                    phase[0] = p.phase
                    display.reset(task, total=p.total)
                metric = f"{p.metric} {p.value:.3g}" if p.metric and math.isfinite(p.value) else ""
                display.update(
                    task, description=escape(f"{place}{label} [{p.phase}]"), total=p.total,
                    completed=p.iteration + p.part,
                    steps=f"{p.iteration}/{p.total}", metric=metric,
                )  # fmt: skip

            yield update

    return bar


@contextmanager
def frame_progress(label: str, quiet: bool) -> Iterator[tuple[Callable[[str], contextmanager], Callable]]:
    """One bar over a video's frames, with the frame rate and the time left; yields
    ``(progress, frames_done)`` for :func:`lrrtool.app.separate_video`: the chunk's solver
    steps show in the bar's label, ``frames_done(done, total)`` moves the bar."""
    if quiet:
        yield progress_bars(True), None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.fields[shown_total]} frames"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as display:
        task = display.add_task(label, total=None, shown_total="?", rate="")

        @contextmanager
        def chunk(name: str) -> Iterator[SolverCallback]:
            def update(p: SolverProgress) -> None:
                step = f"{name} [{p.phase}] {p.iteration}/{p.total} {p.metric} {p.value:.3g}"
                display.update(task, description=f"{label} {step}")

            yield update

        def frames_done(done: int, total: int | None) -> None:
            elapsed = display.tasks[0].elapsed or 0.0
            rate = f"{done / elapsed:.1f} fps" if elapsed > 0 else ""
            display.update(task, completed=done, total=total, shown_total=total or "?", rate=rate)

        yield chunk, frames_done


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


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
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise LRRError(f"{output_dir}: exists and is not a folder")
    folder = source.parent if output_dir is None else output_dir
    return folder / f"{source.stem}.{suffix}.png"  # created when the first output is written


def check_report(path: Path | None, protect: list[Path]) -> None:
    """Refuse, before any work, a report path that cannot be written."""
    if path is not None:
        from lrrtool.media import check_output

        check_output(path, protect)


def write_report(path: Path | None, report: dict, protect: list[Path]) -> None:
    """Write the JSON report. An input skipped this time keeps its entry from the report
    already there (so a re-run never replaces useful entries by ``"skipped": true``);
    when nothing was done and nothing is known, the report is left alone."""
    if path is None:
        return
    from lrrtool.media import atomic_path

    results = report.get("results")
    if results is not None and any(entry.get("skipped") for entry in results):
        known = _report_entries(path)
        if path.exists() and all(e.get("skipped") and e["input"] not in known for e in results):
            console.print(f"{path}: kept (every input was skipped)")
            return
        results = [
            {**known[e["input"]], "skipped": True} if e.get("skipped") and e["input"] in known else e for e in results
        ]
        report = {**report, "results": results}
    with atomic_path(path, protect) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")


def _report_entries(path: Path) -> dict[str, dict]:
    """The entries of an earlier report at ``path``, by input (none when unreadable)."""
    try:
        return {e.get("input"): e for e in json.loads(path.read_text()).get("results", [])}
    except (OSError, ValueError, AttributeError):
        return {}


def skipped(path: Path, target: Path, overwrite: bool) -> dict | None:
    """The one overwrite rule: an existing output, default name or given, is skipped and
    said, unless ``--overwrite``. Returns the skipped input's report entry, or None."""
    if overwrite or not target.exists():
        return None
    console.print(f"skip {path}: {target} exists (use --overwrite)")
    return {"input": str(path), "output": str(target), "skipped": True}


@dataclass(frozen=True)
class BatchJob:
    """A command's steps for one input. ``target(path)`` picks and checks the output
    path (on this machine); ``work(path, target, progress=...)`` reads, solves and
    writes, returning the report entry (here, or in a Ray task: it must pickle);
    ``announce(path, target, entry)`` prints the input's line (here)."""

    target: Callable[[Path], Path]
    work: Callable[..., dict]
    announce: Callable[[Path, Path, dict], None]


@dataclass(frozen=True)
class RayRun:
    """``--ray``: where (``address``; None: ``RAY_ADDRESS`` or a local instance), and each
    task's torch ``threads`` and GPUs."""

    address: str | None
    threads: int
    gpus: int


def run_batch(
    inputs: list[Path], job: BatchJob, *, quiet: bool, overwrite: bool, ray: RayRun | None = None
) -> tuple[list[dict], int]:
    """Run ``job`` on each input, in order or (``ray``) as Ray tasks; a failed input is
    reported and the others go on. The report entries come back in input order either
    way, and an existing output is skipped before any work (:func:`skipped`)."""
    results: list[dict] = [{} for _ in inputs]
    failed = 0
    queued: list[tuple[int, Path, Path]] = []

    def fail(k: int, error: LRRError) -> None:
        nonlocal failed
        failed += 1
        print_error(error)
        results[k] = {"input": str(inputs[k]), "error": flag_message(error)}

    for k, path in enumerate(inputs):
        try:
            target = job.target(path)
            if (entry := skipped(path, target, overwrite)) is not None:
                results[k] = entry
            elif ray is not None:
                queued.append((k, path, target))
            else:
                place = f"[{k + 1}/{len(inputs)}] " if len(inputs) > 1 else ""
                results[k] = job.work(path, target, progress=progress_bars(quiet, place))
                job.announce(path, target, results[k])
        except LRRError as error:
            fail(k, error)
    if queued:
        from lrrtool import cluster

        with cluster.session(ray.address) as engine, task_bar(len(queued), quiet) as advance:

            def finished(i: int, outcome: cluster.Outcome) -> None:
                k, path, target = queued[i]
                entry, error = outcome
                if error is not None:
                    fail(k, error)
                else:
                    results[k] = entry
                    job.announce(path, target, entry)
                advance(failed)

            jobs = [(path, target) for _, path, target in queued]
            cluster.run_tasks(engine, jobs, job.work, threads=ray.threads, gpus=ray.gpus, finished=finished)
    skips = sum(bool(entry.get("skipped")) for entry in results)
    if len(inputs) > 1 and not quiet:
        done = len(inputs) - failed - skips
        console.print(f"{done} of {len(inputs)} inputs done, {skips} skipped, {failed} failed")
    return results, failed


@contextmanager
def task_bar(total: int | None, quiet: bool) -> Iterator[Callable[..., None]]:
    """A bar over Ray tasks; ``advance(failed, total=None)`` marks one more finished (and
    sets the total when it was not known at the start)."""
    if quiet:
        yield lambda failed, total=None: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("tasks", total=total)

        def advance(failed: int, total: int | None = None) -> None:
            label = f"tasks ({failed} failed)" if failed else "tasks"
            bar.update(task, advance=1, description=label, **({} if total is None else {"total": total}))

        yield advance


def image_targets(
    output: Path | None, output_dir: Path | None, suffix: str, many: bool, protect: list[Path]
) -> Callable[[Path], Path]:
    """``target(path)``: an input's output image path (:func:`output_path`), checked before
    any work (:func:`lrrtool.media.check_output`)."""
    from lrrtool import media

    def target(path: Path) -> Path:
        return media.check_output(output_path(path, output, output_dir, suffix, many), protect, image=True)

    return target


def ray_run(use_ray: bool, address: str | None, device: torch.device) -> RayRun | None:
    """The ``--ray`` settings (None without ``--ray``): each task takes the threads that
    :func:`set_threads` gave this process."""
    if not use_ray:
        if address is not None:
            raise LRRError("--ray-address is given without --ray")
        return None
    return RayRun(address, torch.get_num_threads(), 1 if device.type == "cuda" else 0)


def report_header(command: str, settings, device: torch.device, dtype: torch.dtype) -> dict:
    return {
        "command": command,
        "version": __version__,
        "command_line": shlex.join(["lrrtool", *sys.argv[1:]]),
        "device": str(device),
        "threads": workers(),
        "dtype": str(dtype).removeprefix("torch."),
        "settings": asdict(settings),
    }


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


# ------------------------------------------------------------------ penalties
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
FactorsOpt = Annotated[int | None, typer.Option("--factors", metavar="N", help="Factors I (--method dlrl).")]
PBlockOpt = Annotated[
    float | None, typer.Option("--p-block", metavar="X", help="Schatten exponent of each factor (--method dlrl).")
]


@app.command()
def inpaint(
    images: Annotated[list[str], typer.Argument(metavar="IMAGE...", help="Image files or glob patterns.")],
    mask: Annotated[
        Path | None, typer.Option("--mask", metavar="FILE", help="Mask image: white (or transparent) = fill.")
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
    output: OutputOpt = None,
    output_dir: OutputDirOpt = None,
    overwrite: OverwriteOpt = False,
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
            help="auto (default): where the mask has holes wider than 9 px, start from a global rank-r completion "
            "when a held-out test finds it 2 dB better than biharmonic; biharmonic: always biharmonic.",
        ),
    ] = None,
    width: WidthOpt = None,
    factors: FactorsOpt = None,
    p_block: PBlockOpt = None,
    reference: ReferenceOpt = None,
    reg: RegOpt = None,
    lam: LamOpt = None,
    gamma: GammaOpt = None,
    p: POpt = None,
    iters: IterOpt = None,
    lr: LrOpt = None,
    estimator: EstOpt = None,
    device: DeviceOpt = DeviceName.auto,
    dtype: DTypeOpt = DTypeName.float32,
    seed: SeedOpt = 0,
    threads: WorkersOpt = 0,
    memory_gib: MemoryOpt = 2.0,
    report: ReportOpt = None,
    quiet: QuietOpt = False,
    use_ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
) -> None:
    """Fill missing pixels (random drops, blocks, text) by low-rank completion.

    Observed pixels are copied to the output unchanged; only masked pixels are solved
    for. The fill starts from the biharmonic interpolant (or, for wide holes in
    structured images, a global rank-r completion: --start) and is refined by a
    low-rank prior on groups of similar 5x5 patches (penalty --reg, default lnn: the
    WNNM weighting; a series prefix such as laguerre- is used by every solver). Colour
    channels share one low-rank structure (--model global treats them separately).
    Output: NAME.inpainted.png beside the input unless -o/--output-dir; existing outputs
    are skipped unless --overwrite; inputs are never overwritten.
    """
    from lrrtool import app as jobs
    from lrrtool import media
    from lrrtool.tasks.inpaint import InpaintSettings

    with user_errors():
        set_threads(threads, shared=True)
        if sum(x is not None for x in (mask, mask_dir, drop)) != 1:
            raise LRRError("give exactly one of --mask, --mask-dir or --drop")
        if drop is not None and not 0 < drop < 1:
            raise LRRError(f"--drop must be a fraction in (0, 1), got {drop}")
        settings = InpaintSettings(
            method=method.value,
            seed=seed,
            preset=preset.value,
            **given(solver=solver, model=model, start=start, width=width, factors=factors, p_block=p_block),
            **given(reg=reg, lam=lam, gamma=gamma, p=p, iters=iters, lr=lr, estimator=estimator),
        )
        dev, dt = torch_device(device.value), torch_dtype(dtype.value)
        inputs = expand_inputs(images)
        protect = list(inputs) + [x for x in (mask, reference) if x is not None]
        for given_file in (mask, reference):
            if given_file is not None:
                media.existing_file(given_file, "an image file")
        check_report(report, protect)

        ray = ray_run(use_ray, ray_address, dev)
        target = image_targets(output, output_dir, "inpainted", len(inputs) > 1, protect)

        def work(path: Path, target: Path, progress: jobs.ProgressFactory = jobs.no_progress) -> dict:
            return jobs.inpaint_file(
                path,
                target,
                settings,
                mask=None if drop is not None else media.find_mask(path, mask=mask, mask_dir=mask_dir),
                drop=drop,
                invert_mask=invert_mask,
                resize_mask=resize_mask,
                reference=reference,
                device=dev,
                dtype=dt,
                seed=seed,
                protect=protect,
                memory_gib=memory_gib,
                progress=progress,
            )

        def announce(path: Path, target: Path, entry: dict) -> None:
            if not quiet:
                extra = f", PSNR {entry['metrics']['psnr']:.2f} dB" if "metrics" in entry else ""
                console.print(f"{path} -> {target} ({entry['seconds']:.1f} s, {entry['iterations']} steps{extra})")

        job = BatchJob(target, work, announce)
        results, failed = run_batch(inputs, job, quiet=quiet, overwrite=overwrite, ray=ray)
        write_report(report, {**report_header("inpaint", settings.resolved(), dev, dt), "results": results}, protect)
        if failed:
            raise typer.Exit(1)


# ------------------------------------------------------------------ separate
@app.command()
def separate(
    video: Annotated[
        Path, typer.Argument(metavar="VIDEO", help="Video file (any format ffmpeg reads) or folder of frames.")
    ],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", metavar="DIR", help="Default: NAME.separated/ beside the input.")
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", metavar="N", min=1, help="Use at most N frames (2 or more).")
    ] = None,
    start: Annotated[int, typer.Option("--start", metavar="N", min=0, help="First frame to use.")] = 0,
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
    outputs: Annotated[
        str,
        typer.Option("--outputs", metavar="LIST", help="Videos to write, comma-separated: background,foreground,mask."),
    ] = "background,foreground,mask",
    solver: SolverOpt = None,
    frames: Annotated[bool, typer.Option("--frames", help="Also export PNG frames.")] = False,
    overwrite: OverwriteOpt = False,
    reg: RegOpt = None,
    lam: LamOpt = None,
    gamma: GammaOpt = None,
    p: POpt = None,
    iters: IterOpt = None,
    lr: LrOpt = None,
    estimator: EstOpt = None,
    device: DeviceOpt = DeviceName.auto,
    dtype: DTypeOpt = DTypeName.float32,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    report: ReportOpt = None,
    quiet: QuietOpt = False,
    use_ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
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
    background.mp4, foreground.mp4 (|V - X|, brightened 4x) and mask.mp4 (white =
    foreground: the residual, maxed over channels, above 4 robust standard deviations
    (1.4826 x its median, per frame and region), grown into neighbours above 2.5 of them:
    hysteresis, as in Canny). Warns when the background is not one still scene (a moving
    camera, a scene cut).
    """
    from lrrtool import app as jobs
    from lrrtool.video import SeparateSettings

    with user_errors():
        set_threads(threads)
        settings = SeparateSettings(
            seed=seed,
            work_pixels=work_pixels,
            components=components,
            **given(solver=solver, reg=reg, lam=lam, gamma=gamma, p=p, iters=iters, lr=lr, estimator=estimator),
        )
        dev, dt = torch_device(device.value), torch_dtype(dtype.value)
        wh = None
        if size is not None:
            try:
                w, h = (int(v) for v in size.lower().split("x"))
            except ValueError:
                raise LRRError(f"--size must look like 320x240, got {size!r}") from None
            wh = (w, h)
        folder = output_dir or video.with_name(video.stem + ".separated")
        check_report(report, [video])
        wanted = tuple(name.strip() for name in outputs.split(",") if name.strip())
        existing = [folder / f"{name}.mp4" for name in wanted if (folder / f"{name}.mp4").exists()]
        if existing and not overwrite:
            console.print(f"skip {video}: {existing[0]} exists (use --overwrite)")
            return
        ray = ray_run(use_ray, ray_address, dev)
        if segment_frames is not None and ray is None:
            raise LRRError("--segment-frames splits the video into Ray tasks: give --ray too")
        if ray is not None and frames:
            raise LRRError("--frames is not available with --ray: the segments write videos only")
        common = dict(start=start, max_frames=max_frames, scale=scale, size=wh, grey=grey, chunk_frames=chunk_frames)
        common |= dict(memory_gib=memory_gib, outputs=wanted, device=dev, dtype=dt)
        if ray is not None:
            entry = separate_on_ray(video, folder, settings, ray, segment_frames, quiet, common)
        else:
            with frame_progress(f"separate {video.name}", quiet) as (chunk_progress, frames_bar):
                entry = jobs.separate_video(
                    video, folder, settings, frames=frames, progress=chunk_progress, frames_done=frames_bar, **common
                )
        for warning in entry["warnings"]:
            console.print(f"[yellow]warning:[/] {warning}")
        if not quiet:
            memory = f", peak memory {entry['peak_memory_gib']:.2f} GiB" if entry["peak_memory_gib"] else ""
            console.print(
                f"{video} -> {folder}/ ({plural(entry['frames'], 'frame')}, {entry['seconds']:.1f} s, "
                f"{entry['fps']} fps{memory})"
            )
        write_report(report, {**report_header("separate", settings.resolved(), dev, dt), **entry}, [video])


def separate_on_ray(video: Path, folder: Path, settings, ray: RayRun, segment_frames, quiet: bool, common) -> dict:
    """``separate --ray``: the video's segments as Ray tasks, with a bar over them."""
    from lrrtool import app as jobs
    from lrrtool import cluster

    with cluster.session(ray.address) as engine:
        resources = engine.cluster_resources()
        slots = int(resources.get("GPU", 0)) if ray.gpus else int(resources.get("CPU", 1)) // ray.threads
        with task_bar(None, quiet) as advance:

            def run(jobs_, work, finished) -> None:
                cluster.run_tasks(engine, jobs_, work, threads=ray.threads, gpus=ray.gpus, finished=finished)

            return jobs.separate_segments(
                video,
                folder,
                settings,
                run=run,
                segment_frames=segment_frames,
                slots=max(1, slots),
                segments_done=lambda done, total: advance(0, total),
                **common,
            )


# ------------------------------------------------------------------ denoise
@app.command()
def denoise(
    images: Annotated[list[str], typer.Argument(metavar="IMAGE...", help="Noisy image files or glob patterns.")],
    output: OutputOpt = None,
    output_dir: OutputDirOpt = None,
    sigma: Annotated[
        str, typer.Option("--sigma", metavar="X", help="Noise std in 0-255 units, or auto (wavelet MAD estimate).")
    ] = "auto",
    overwrite: OverwriteOpt = False,
    reference: ReferenceOpt = None,
    patch: Annotated[
        int | None, typer.Option("--patch", metavar="N", help="Patch side (default 6 for grey, 5 for colour).")
    ] = None,
    group: Annotated[
        int | None, typer.Option("--group", metavar="N", help="Patches per group (default 48 grey, 64 colour).")
    ] = None,
    solver: SolverOpt = None,
    preset: PresetOpt = PresetName.default,
    reg: RegOpt = None,
    lam: LamOpt = None,
    gamma: GammaOpt = None,
    p: POpt = None,
    iters: IterOpt = None,
    lr: LrOpt = None,
    estimator: EstOpt = None,
    device: DeviceOpt = DeviceName.auto,
    dtype: DTypeOpt = DTypeName.float32,
    seed: SeedOpt = 0,
    threads: WorkersOpt = 0,
    memory_gib: MemoryOpt = 2.0,
    report: ReportOpt = None,
    quiet: QuietOpt = False,
    use_ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
) -> None:
    """Remove Gaussian noise with a low-rank prior on groups of similar patches.

    WNNM-style iterations (12 steps): groups of 48 similar 6x6 patches (grey) or 64
    similar 5x5 patches (colour, all channels jointly), found by exact search in a 31x31
    window, are shrunk by reweighted singular-value thresholding with weights h' of
    --reg (default lnn, WNNM's weighting), with the noise fed back and re-estimated.
    --solver adam runs the paper's gradient route instead. --sigma auto estimates the
    noise by the wavelet MAD rule and reports it.
    """
    from lrrtool import app as jobs
    from lrrtool import media
    from lrrtool.tasks.denoise import DenoiseSettings

    with user_errors():
        set_threads(threads, shared=True)
        settings = DenoiseSettings(
            seed=seed,
            preset=preset.value,
            **given(solver=solver, patch=patch, group=group),
            **given(reg=reg, lam=lam, gamma=gamma, p=p, iters=iters, lr=lr, estimator=estimator),
        )
        level = None
        if sigma != "auto":
            try:
                level = float(sigma)
            except ValueError:
                raise LRRError(f"--sigma must be a number in 0-255 units or 'auto', got {sigma!r}") from None
            if not 0 < level < 255:
                raise LRRError(f"--sigma must be in (0, 255), got {level}")
            level /= 255
        dev, dt = torch_device(device.value), torch_dtype(dtype.value)
        inputs = expand_inputs(images)
        protect = list(inputs) + ([reference] if reference else [])
        if reference is not None:
            media.existing_file(reference, "an image file")
        check_report(report, protect)

        ray = ray_run(use_ray, ray_address, dev)
        target = image_targets(output, output_dir, "denoised", len(inputs) > 1, protect)

        def work(path: Path, target: Path, progress: jobs.ProgressFactory = jobs.no_progress) -> dict:
            return jobs.denoise_file(
                path,
                target,
                settings,
                sigma=level,
                reference=reference,
                device=dev,
                dtype=dt,
                protect=protect,
                memory_gib=memory_gib,
                progress=progress,
            )

        def announce(path: Path, target: Path, entry: dict) -> None:
            if not quiet:
                extra = f", PSNR {entry['metrics']['psnr']:.2f} dB" if "metrics" in entry else ""
                console.print(
                    f"{path} -> {target} (sigma {entry['sigma_255']:.1f}/255, {entry['seconds']:.1f} s{extra})"
                )

        job = BatchJob(target, work, announce)
        results, failed = run_batch(inputs, job, quiet=quiet, overwrite=overwrite, ray=ray)
        write_report(report, {**report_header("denoise", settings.resolved(), dev, dt), "results": results}, protect)
        if failed:
            raise typer.Exit(1)


# ------------------------------------------------------------------ complete
@app.command()
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
    width: WidthOpt = None,
    factors: FactorsOpt = None,
    p_block: PBlockOpt = None,
    reg: RegOpt = None,
    lam: LamOpt = None,
    gamma: GammaOpt = None,
    p: POpt = None,
    iters: IterOpt = None,
    lr: Annotated[float | None, typer.Option("--lr", metavar="X", help="Adam step size in (0, 1].")] = None,
    device: DeviceOpt = DeviceName.auto,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
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
    from lrrtool import app as jobs
    from lrrtool import media
    from lrrtool.recsys import tables
    from lrrtool.recsys.completion import CompletionSettings

    with user_errors():
        set_threads(threads)
        if predict is None and test_fraction is None:
            raise LRRError("nothing to do: give --predict PAIRS.csv and/or --test-fraction F")
        if output is not None and predict is None:
            raise LRRError("-o needs --predict PAIRS.csv (the pairs to write predictions for)")
        settings = CompletionSettings(
            method=method.value,
            seed=seed,
            **given(width=width, factors=factors, p_block=p_block),
            **given(reg=reg, lam=lam, gamma=gamma, p=p, iters=iters, lr=lr),
        )
        protect = [x for x in (ratings, predict) if x is not None]
        for given_file in protect:
            media.existing_file(given_file, "a CSV file")
        check_report(report, protect)
        target = None
        if predict is not None:
            target = output if output is not None else predict.with_name(f"{predict.stem}.predictions.csv")
            tables.check_predictions_path(target, protect)
            if skipped(predict, target, overwrite) is not None:
                if test_fraction is None:
                    return
                predict = target = None  # the held-out test still runs
        dev = torch_device(device.value)
        entry = jobs.complete_csv(
            ratings,
            settings,
            predict=predict,
            target=target,
            test_fraction=test_fraction,
            device=dev,
            seed=seed,
            progress=progress_bars(quiet),
        )
        if not quiet and "test" in entry:
            t = entry["test"]
            console.print(
                f"test RMSE {t['rmse']:.4f}, MAE {t['mae']:.4f} on {t['count']} held-out ratings "
                f"({t['fallback']} by the bias fallback), {entry['seconds']:.1f} s"
            )
        if not quiet and target is not None:
            console.print(f"{entry['predicted']} predictions -> {target} ({entry['fallback']} by the bias fallback)")
        header = report_header("complete", settings.resolved(), dev, torch.float32)
        write_report(report, {**header, "results": [entry]}, protect + ([target] if target is not None else []))


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
