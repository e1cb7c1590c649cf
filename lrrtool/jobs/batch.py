"""A command over its inputs: output names, the overwrite rule, one input after another
or one Ray task each (:mod:`lrrtool.cluster`), and the JSON report."""

from __future__ import annotations

import glob
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lrrtool import __version__, media
from lrrtool.errors import LRRError
from lrrtool.jobs.clips import check_clip_output
from lrrtool.jobs.progress import Listener, Update, solver_updates
from lrrtool.workers import workers

#: ``work(path, target, callback=None)``: one input's report entry (it writes ``target``);
#: a module-level function or a partial of one, so that Ray can ship it.
Work = Callable[..., dict]


def expand_inputs(patterns: list[str] | tuple[str, ...]) -> list[Path]:
    """File names and glob patterns, each pattern's matches sorted; a pattern that matches
    nothing is refused."""
    paths: list[Path] = []
    for pattern in map(str, patterns):
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise LRRError(f"{pattern}: no file matches")
        paths += [Path(m) for m in matches]
    if not paths:
        raise LRRError("no input given")
    return list(dict.fromkeys(paths))  # an input named twice (overlapping patterns) runs once


def output_path(source: Path, output: Path | None, output_dir: Path | None, suffix: str, many: bool) -> Path:
    """``output``, or ``NAME.suffix.png`` in ``output_dir`` (default: beside the input);
    for a clip ``NAME.suffix.mp4`` (a video) or ``NAME.suffix`` (a folder of frames)."""
    if output is not None and many:
        raise LRRError("output names one file; with several inputs use output_dir", parameter="output",
                       mentions=("output_dir",))  # fmt: skip
    if output is not None:
        return Path(output)
    if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise LRRError(f"{output_dir}: exists and is not a folder")
    folder = source.parent if output_dir is None else Path(output_dir)
    return folder / f"{source.stem}.{suffix}{_kind(source)}"  # created when the first output is written


def _kind(source: Path) -> str:
    """An output's ending by its input's kind: a PNG, a video (``.mp4``) or a folder of frames."""
    if not media.is_clip(source):
        return ".png"
    return "" if source.is_dir() else ".mp4"


def image_targets(
    output: Path | None, output_dir: Path | None, suffix: str, inputs: list[Path], protect: list[Path]
) -> Callable[[Path], Path]:
    """``target(path)``: an input's output image path (:func:`output_path`), checked before
    any work (:func:`lrrtool.media.check_output`). Inputs whose outputs would share a name
    (``pic.jpg`` and ``pic.png``) get their whole name in it (``pic.jpg.inpainted.png``);
    if two still share one (``a/pic.png`` and ``b/pic.png`` into one folder), the batch is
    refused before any work, naming both."""
    many = len(inputs) > 1
    names = {path: output_path(path, output, output_dir, suffix, many) for path in inputs}
    seen: dict[Path, list[Path]] = {}
    for path, name in names.items():
        seen.setdefault(name.resolve(), []).append(path)
    for shared in (paths for paths in seen.values() if len(paths) > 1):
        for path in shared:
            names[path] = names[path].with_name(f"{path.name}.{suffix}{_kind(path)}")
    final: dict[Path, Path] = {}
    for path, name in names.items():
        if (other := final.setdefault(name.resolve(), path)) != path:
            raise LRRError(
                f"{other} and {path} would both be written to {name}: give them different names or output folders"
            )

    def target(path: Path) -> Path:
        if media.is_clip(path):
            return check_clip_output(path, names[path], protect)
        return media.check_output(names[path], protect, image=True)

    return target


def check_report(path: Path | None, protect: list[Path]) -> None:
    """Refuse, before any work, a report path that cannot be written."""
    if path is not None:
        media.check_output(path, protect)


def write_report(path: Path | None, report: dict, protect: list[Path], listener: Listener) -> None:
    """Write the JSON report. An input skipped this time keeps its entry from the report
    already there (so a re-run never replaces useful entries by ``"skipped": true``);
    when nothing was done and nothing is known, the report is left alone (and said)."""
    if path is None:
        return
    results = report.get("results")
    if results is not None and any(entry.get("skipped") for entry in results):
        known = _report_entries(path)
        if path.exists() and all(e.get("skipped") and e["input"] not in known for e in results):
            listener(Update(str(path), "note", note="kept (every input was skipped)"))
            return
        results = [
            {**known[e["input"]], "skipped": True} if e.get("skipped") and e["input"] in known else e for e in results
        ]
        report = {**report, "results": results}
    with media.atomic_path(path, protect) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")


def _report_entries(path: Path) -> dict[str, dict]:
    """The entries of an earlier report at ``path``, by input (none when unreadable)."""
    try:
        return {e.get("input"): e for e in json.loads(path.read_text()).get("results", [])}
    except (OSError, ValueError, AttributeError):
        return {}


def skip_entry(path: Path, target: Path, overwrite: bool) -> dict | None:
    """The one overwrite rule: an existing output, default name or given, is skipped
    unless ``overwrite``. Returns the skipped input's report entry, or None."""
    if overwrite or not target.exists():
        return None
    return {"input": str(path), "output": str(target), "skipped": True}


@dataclass(frozen=True)
class RayRun:
    """Ray: where (``address``; None: ``RAY_ADDRESS`` or a local instance), and each
    task's torch ``threads`` and GPUs."""

    address: str | None
    threads: int
    gpus: int


def ray_run(use_ray: bool, address: str | None, device: torch.device) -> RayRun | None:
    """The Ray settings (None without ``use_ray``): each task takes this process's torch
    threads, and one GPU on CUDA."""
    if not use_ray:
        if address is not None:
            raise LRRError("ray_address is given without ray", parameter="ray_address", mentions=("ray",))
        return None
    return RayRun(address, torch.get_num_threads(), 1 if device.type == "cuda" else 0)


def run_batch(
    inputs: list[Path],
    target: Callable[[Path], Path],
    work: Work,
    *,
    label: str,
    listener: Listener,
    overwrite: bool,
    ray: RayRun | None = None,
    in_process: Callable[[Path], bool] = lambda path: False,
    describe: Callable[[LRRError], str] = str,
) -> list[dict]:
    """Run ``work`` on each input, in order or (``ray``) as Ray tasks, but those that
    ``in_process`` names in this process, first (a clip that its work splits into Ray
    tasks itself); a failed input is reported (``describe`` words its error) and the
    others go on. ``target(path)`` names and checks an input's output before any work,
    and an existing output is skipped (:func:`skip_entry`). The listener hears each
    input's steps and its end (``done``, ``skipped``, ``failed``, with its entry); the
    entries come back in input order."""
    results: list[dict] = [{} for _ in inputs]
    queued: list[tuple[int, Path, Path]] = []

    def task(k: int) -> str:
        place = f"[{k + 1}/{len(inputs)}] " if len(inputs) > 1 else ""
        return f"{place}{label} {inputs[k].name}"

    def fail(k: int, error: LRRError) -> None:
        results[k] = {"input": str(inputs[k]), "error": describe(error)}
        listener(Update(task(k), "failed", entry=results[k], error=error))

    for k, path in enumerate(inputs):
        try:
            output = target(path)
            if (entry := skip_entry(path, output, overwrite)) is not None:
                results[k] = entry
                listener(Update(task(k), "skipped", entry=entry))
            elif ray is not None and not in_process(path):
                queued.append((k, path, output))
            else:
                results[k] = work(path, output, callback=solver_updates(listener, task(k)))
                listener(Update(task(k), "done", 1, 1, entry=results[k]))
        except LRRError as error:
            fail(k, error)
    if queued:
        _run_on_ray(queued, work, ray, results, listener, task, fail)
    return results


def _run_on_ray(queued, work: Work, ray: RayRun, results: list[dict], listener: Listener, task, fail) -> None:
    """The queued inputs as Ray tasks, told to ``listener`` as they finish."""
    from lrrtool import cluster

    counts = {"finished": 0, "failed": 0}

    def finished(i: int, outcome: cluster.Outcome) -> None:
        k = queued[i][0]
        entry, error = outcome
        if error is not None:
            counts["failed"] += 1
            fail(k, error)
        else:
            results[k] = entry
            listener(Update(task(k), "done", 1, 1, entry=entry))
        counts["finished"] += 1
        note = f"{counts['failed']} failed" if counts["failed"] else ""
        listener(Update("tasks", "tasks", counts["finished"], len(queued), note))

    with cluster.session(ray.address) as engine:
        listener(Update("tasks", "tasks", 0, len(queued)))
        jobs = [(path, output) for _, path, output in queued]
        cluster.run_tasks(engine, jobs, work, threads=ray.threads, gpus=ray.gpus, finished=finished)


def report_header(command: str, settings, device: torch.device, dtype: torch.dtype, command_line: str | None) -> dict:
    """The report's fields that describe the run: command, version, device, threads, settings."""
    return {
        "command": command,
        "version": __version__,
        "command_line": command_line,
        "device": str(device),
        "threads": workers(),
        "dtype": str(dtype).removeprefix("torch."),
        "settings": asdict(settings),
    }
