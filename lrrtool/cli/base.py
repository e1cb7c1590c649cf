"""The command line's base: the Typer app, the console, and the options, those several
commands share declared once (``*_OPTIONS`` groups that :func:`command` adds).
"""

from __future__ import annotations

import functools
import inspect
import shlex
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lrrtool import jobs
from lrrtool.core import ESTIMATORS, regularizer_names
from lrrtool.recsys.settings import METHODS as COMPLETION_METHODS
from lrrtool.settings import PRESETS
from lrrtool.solvers import SOLVERS
from lrrtool.tasks.inpaint import INPAINT_METHODS, MODELS, STARTS

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


def _usage_name(argument: typer.core.TyperArgument) -> str:
    """An argument in the usage line as its metavar says it (``IMAGE...``), optional in
    brackets: Typer wraps a required one in braces and adds a second ``...``."""
    name = argument.display_name_raw if argument.required else f"[{argument.display_name_raw}]"
    return name if argument.nargs == 1 or name.rstrip("]").endswith("...") else name + "..."


typer.core.TyperArgument._usage_display_name = _usage_name


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


# ------------------------------------------------------------------ options shared by several commands
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
    typer.Option("--preset", help="Speed/quality trade-off of the threshold solver (docs/commands.md: presets)."),
]
DeviceOpt = Annotated[DeviceName, typer.Option("--device", help="auto: cuda when available.")]
DTypeOpt = Annotated[DTypeName, typer.Option("--dtype", help="Precision of the solve.")]
SeedOpt = Annotated[int, typer.Option("--seed", metavar="N", help="Seed of every random choice.")]
ThreadsOpt = Annotated[
    int,
    typer.Option("--threads", metavar="N", min=0, help="CPU threads; 0 = all cores (default 1; docs/commands.md)."),
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
        help="Run each input as a task on Ray (the ray extra), a clip or a video split into segments, a task "
        "each: RAY_ADDRESS or --ray-address, else a local instance.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", metavar="ADDRESS", help="Ray cluster for --ray (host:port or ray://host:port)."),
]
OutputOpt = Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE", help="Output file (one input).")]
OutputDirOpt = Annotated[Path | None, typer.Option("--output-dir", metavar="DIR", help="Folder for the outputs.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (default: skip them).")]
ClipSegmentsOpt = Annotated[
    int | None,
    typer.Option(
        "--segment-frames",
        metavar="N",
        min=1,
        help="With --ray: frames per task a clip is split into, rounded up to whole chunks (default: the clip "
        "shared evenly over the cluster's task slots).",
    ),
]
ReferenceOpt = Annotated[
    Path | None, typer.Option("--reference", metavar="FILE", help="Clean image: PSNR/SSIM on screen and in the report.")
]


#: name -> (annotation, default) of the options several commands share: a command lists
#: the groups it takes (:func:`command`) and receives their values in ``**shared``.
SOLVER_OPTIONS = {
    "reg": (RegOpt, None), "lam": (LamOpt, None), "gamma": (GammaOpt, None), "p": (POpt, None),
    "iters": (IterOpt, None), "lr": (LrOpt, None), "estimator": (EstOpt, None),
}  # fmt: skip
RUN_OPTIONS = {"device": (DeviceOpt, DeviceName.auto), "dtype": (DTypeOpt, DTypeName.float32), "seed": (SeedOpt, 0)}
REPORT_OPTIONS = {"report": (ReportOpt, None), "quiet": (QuietOpt, False)}
RAY_OPTIONS = {"use_ray": (RayOpt, False), "ray_address": (RayAddressOpt, None)}
COMPLETION_OPTIONS = {name: SOLVER_OPTIONS[name] for name in ("reg", "lam", "gamma", "p", "iters")}
IMAGE_OPTIONS = {
    "output": (OutputOpt, None), "output_dir": (OutputDirOpt, None), "overwrite": (OverwriteOpt, False),
    "reference": (ReferenceOpt, None), "threads": (WorkersOpt, 0), "memory_gib": (MemoryOpt, 2.0),
    "segment_frames": (ClipSegmentsOpt, None),
}  # fmt: skip


def command(*groups: dict) -> Callable:
    """Register ``function`` as a command whose options are its own parameters followed by
    those of ``groups``, which it receives together as its ``**shared`` keyword."""

    def register(function: Callable) -> Callable:
        own = [p for p in inspect.signature(function, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
        names = {name: spec for group in groups for name, spec in group.items()}
        extra = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, (a, d) in names.items()
        ]

        @functools.wraps(function)
        def run(**values):
            return function(**values)

        run.__signature__ = inspect.Signature(own + extra)
        run.__annotations__ = {p.name: p.annotation for p in own + extra}
        return app.command(name=function.__name__)(run)

    return register


def given(**options) -> dict[str, object]:
    """The options the user set (not None), enum choices as their values."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in options.items() if v is not None}


def pick(values: dict, group: dict) -> dict:
    return {name: values[name] for name in group if name in values}


def runtime(shared: dict) -> jobs.Runtime:
    """The request's runtime from the shared options (a command without an option gets
    the library's default)."""
    return jobs.Runtime(
        device=shared["device"].value, dtype=shared.get("dtype", DTypeName.float32).value,
        threads=shared.get("threads"), memory_gib=shared.get("memory_gib", jobs.Runtime.memory_gib),
        ray=shared.get("use_ray", False), ray_address=shared.get("ray_address"),
        command_line=shlex.join(["lrrtool", *sys.argv[1:]]),
    )  # fmt: skip


def outputs(shared: dict) -> jobs.Outputs:
    """Where an image command's results go, from its shared options."""
    return jobs.Outputs(shared["output"], shared["output_dir"], shared["overwrite"], shared["report"])
