"""The command line's output: errors with flags, progress bars, one line per input."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lrrtool import jobs
from lrrtool.cli.base import console
from lrrtool.errors import LRRError


def flag_message(error: LRRError) -> str:
    """The error's message with the parameters it names worded as flags: its
    ``parameter`` where the message starts with it, each of its ``mentions`` anywhere
    (``lam must be ...`` -> ``--lam must be ...``)."""
    message = str(error)
    if error.parameter and re.match(rf"{re.escape(error.parameter)}(?![\w-])", message):
        message = flag(error.parameter) + message[len(error.parameter) :]
    for name in error.mentions:
        message = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", flag(name), message)
    return message


def flag(parameter: str) -> str:
    return "--" + parameter.replace("_", "-")


def print_error(error: LRRError) -> None:
    console.print(f"[bold red]error:[/] {escape(flag_message(error))}", highlight=False, soft_wrap=True, markup=True)


class Display:
    """Renders a command's :class:`~lrrtool.jobs.Update` values: a bar per running task
    (its phase, steps, time left), and one line as each input ends (``announce(entry)``
    for a finished one, when not ``quiet``; skips, failures and notes always)."""

    def __init__(self, quiet: bool, announce: Callable[[dict], str | None] = lambda entry: None) -> None:
        self.quiet, self.announce, self.phases = quiet, announce, {}
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[note]}"),
                   TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn())  # fmt: skip
        self.display = None if quiet else Progress(*columns, console=console, transient=True)

    def __enter__(self) -> Display:
        if self.display is not None:
            self.display.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.display is not None:
            self.display.stop()

    def __call__(self, update: jobs.Update) -> None:
        if update.ended or update.phase == "note":
            self._finish(update.task)
            self._line(update)
        elif self.display is not None:
            self._bar(update)

    def _bar(self, u: jobs.Update) -> None:
        label = u.task if u.phase == u.task else f"{u.task} [{u.phase}]"
        if u.task not in self.phases:
            self.phases[u.task] = (self.display.add_task(escape(label), total=u.total, note=""), u.phase)
        bar, phase = self.phases[u.task]
        if phase != u.phase:  # a new phase: its own bar and time left
            self.display.reset(bar, total=u.total)
            self.phases[u.task] = (bar, u.phase)
        self.display.update(bar, description=escape(label), total=u.total, completed=u.done, note=escape(u.note))

    def _finish(self, task: str) -> None:
        if self.display is not None and task in self.phases:
            self.display.remove_task(self.phases.pop(task)[0])

    def _line(self, u: jobs.Update) -> None:
        entry = u.entry or {}
        if u.phase == "failed":
            print_error(u.error)
        elif u.phase == "skipped":
            console.print(f"skip {entry['input']}: {entry['output']} exists (use --overwrite)")
        elif u.phase == "note":
            console.print(f"{u.task}: {u.note}")
        elif not self.quiet and (line := self.announce(entry)):
            console.print(line)
        if u.phase == "done":
            for warning in entry.get("warnings", []):
                console.print(f"[yellow]warning:[/] {escape(entry['output'])}: {escape(warning)}")


@contextmanager
def user_errors() -> Iterator[None]:
    """A library error is one red line and exit 1; Ctrl-C exit 130."""
    try:
        yield
    except LRRError as error:
        print_error(error)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def run(function: Callable, request, quiet: bool, announce: Callable[[dict], str | None] = lambda e: None) -> dict:
    """One library command with its progress rendered (:class:`Display`)."""
    with Display(quiet, announce) as display:
        return function(request, display, flag_message)


def finish_batch(report: dict, quiet: bool) -> None:
    """The batch's summary line (several inputs); exit 1 when an input failed."""
    results = report["results"]
    failed = sum("error" in entry for entry in results)
    skips = sum(bool(entry.get("skipped")) for entry in results)
    if len(results) > 1 and not quiet:
        console.print(
            f"{len(results) - failed - skips} of {len(results)} inputs done, {skips} skipped, {failed} failed"
        )
    if failed:
        raise typer.Exit(1)


def announce_image(e: dict) -> str:
    """The line of a finished image or clip: where it went, its time, steps or noise level
    (a clip: frames and rate), PSNR."""
    sigma = f"sigma {e['sigma_255']:.1f}/255, " if "sigma_255" in e else ""
    steps = "" if "sigma_255" in e or "iterations" not in e else f", {e['iterations']} steps"
    if "frames" in e:  # a clip
        steps += f", {e['frames']} frames at {e['fps']:.2f} fps"
    psnr = f", PSNR {e['metrics']['psnr']:.2f} dB" if "metrics" in e else ""
    return f"{e['input']} -> {e['output']} ({sigma}{e['seconds']:.1f} s{steps}{psnr})"


def announce_completion(e: dict) -> str | None:
    """The lines of a completion: the held-out errors, where the predictions went."""
    lines = []
    if "test" in e:
        t = e["test"]
        lines.append(
            f"test RMSE {t['rmse']:.4f}, MAE {t['mae']:.4f} on {t['count']} held-out ratings "
            f"({t['fallback']} by the bias fallback), {e['seconds']:.1f} s"
        )
    if "output" in e:
        lines.append(f"{e['predicted']} predictions -> {e['output']} ({e['fallback']} by the bias fallback)")
    return "\n".join(lines) or None
