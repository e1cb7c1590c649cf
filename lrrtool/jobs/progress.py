"""The one progress protocol: a running command tells its front end everything as
:class:`Update` values (what it is working on, how far, and when an input ends)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from lrrtool.errors import LRRError
from lrrtool.solvers import Callback, Progress


@dataclass(frozen=True)
class Update:
    """One report of a running command.

    ``task``: what it is about (``"[2/5] inpaint photo.jpg"``, ``"separate clip.mp4"``,
    ``"tasks"`` for Ray tasks); ``phase``: what it is doing (a solver's phase such as
    ``"start"`` or ``"solve"``, ``"frames"``, ``"tasks"``) or how an input ended
    (``"done"``, ``"skipped"``, ``"failed"``), or ``"note"`` for a message; ``done`` of
    ``total`` units (None: not known yet); ``note``: the numbers in words
    (``"3/12 change 0.001"``). An input's end carries its report ``entry``, a failure
    its ``error`` too."""

    task: str
    phase: str
    done: float = 0.0
    total: float | None = None
    note: str = ""
    entry: dict | None = None
    error: LRRError | None = None

    @property
    def ended(self) -> bool:
        """Whether this is an input's end (its bar, if any, is finished)."""
        return self.phase in ENDINGS


#: The phases that end an input.
ENDINGS = ("done", "skipped", "failed")

#: A front end's receiver of updates.
Listener = Callable[[Update], None]


def ignore(update: Update) -> None:
    """The listener of a caller that wants no progress."""


def step_note(step: Progress) -> str:
    """``"3/12 change 0.001"``: a solver step and its metric, when finite."""
    metric = f" {step.metric} {step.value:.3g}" if step.metric and math.isfinite(step.value) else ""
    return f"{step.iteration}/{step.total}{metric}"


def solver_updates(listener: Listener, task: str) -> Callback:
    """A solver callback that passes each step on as an :class:`Update` of ``task``: the
    solver's phase, its steps done (with the finished part of the next) of its total."""

    def report(step: Progress) -> None:
        listener(Update(task, step.phase, step.iteration + step.part, step.total, step_note(step)))

    return report
