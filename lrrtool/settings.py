"""What every task's settings share: one frozen dataclass per task, validated when it is
made, with defaults that depend on one choice (the solver or the method).

A setting left as None takes the chosen solver's (or method's) default
(``defaults``), as the ``preset`` (``fast``, ``default``, ``best``; x264's idea: one
word for a measured point of the speed/quality trade-off) changes it (``presets``). A
setting that applies to some choices only (``applies_to``) must stay None under the
others: setting it is refused by name, never silently ignored. Errors
carry the parameter's name (``LRRError.parameter``) and start with it
(``lam must be >= 0, got -1``), so the CLI can print the flag instead.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch

from lrrtool.core import ESTIMATORS, PENALTIES, LowRankRegularizer, parse_reg
from lrrtool.errors import LRRError
from lrrtool.solvers import check_learning_rate

#: Speed/quality presets: ``default`` keeps the quality the README's tables state; ``fast``
#: and ``best`` are the two ends each task's bench measures beside it
#: (``bench/denoise.py --presets``, ``bench/inpaint.py --photos --presets``).
PRESETS = ("fast", "default", "best")


@dataclass(frozen=True)
class TaskSettings:
    """``reg`` (penalty, optionally series-prefixed), its ``gamma``, ``p``, ``degree`` and
    ``estimator``; the weight ``lam``; ``iters`` and ``lr`` of the solver; ``seed`` of
    every random choice; ``preset``, one of :data:`PRESETS`."""

    reg: str | None = None
    gamma: float | None = None
    p: float | None = None
    degree: int | None = None
    estimator: str | None = None
    lam: float | None = None
    iters: int | None = None
    lr: float | None = None
    seed: int = 0
    preset: str = "default"

    #: The field whose value picks the defaults ("solver" or "method").
    choice_field: ClassVar[str] = "solver"
    #: ``{choice: {setting: default}}``; the first choice is the default one.
    defaults: ClassVar[dict[str, dict[str, object]]] = {}
    #: ``{choice: {preset: {setting: value}}}``: what ``fast``/``best`` change in the
    #: choice's defaults (``default`` changes nothing). A choice absent here has no presets.
    presets: ClassVar[dict[str, dict[str, dict[str, object]]]] = {}
    #: ``{setting: choices it applies to}``; settings not listed apply to every choice.
    applies_to: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: Settings that must be integers >= 1, and numbers that must be >= 0.
    counts: ClassVar[tuple[str, ...]] = ("iters",)
    nonnegative: ClassVar[tuple[str, ...]] = ("lam",)
    #: gamma used when ``gamma`` is None and the penalty takes one (None: the penalty's own).
    default_gamma: ClassVar[float | None] = None
    #: What a video takes instead of the choice's defaults (:meth:`for_video`).
    video_defaults: ClassVar[dict[str, object]] = {}

    @property
    def choice(self) -> str:
        """The solver (or method) these settings run."""
        value = getattr(self, self.choice_field)
        return next(iter(self.defaults)) if value is None else value

    def __post_init__(self) -> None:
        choice = self.choice
        if choice not in self.defaults:
            raise LRRError(
                f"{self.choice_field} must be one of {', '.join(self.defaults)}, got {choice!r}",
                parameter=self.choice_field,
            )
        if self.preset not in PRESETS:
            raise LRRError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}", parameter="preset")
        if self.preset != "default" and self.preset not in self.presets.get(choice, {}):
            offered = ", ".join(self.describe(c) for c in self.presets) or "nothing"
            raise LRRError(
                f"preset {self.preset} does not apply to {self.describe(choice)} (only to {offered})",
                parameter="preset",
            )
        for name, choices in self.applies_to.items():
            if getattr(self, name) is not None and choice not in choices:
                applies = ", ".join(self.describe(c) for c in choices)
                raise LRRError(f"{name} does not apply to {self.describe(choice)} (only to {applies})", parameter=name)
        self.check(self.resolved_values())

    @classmethod
    def describe(cls, choice: str) -> str:
        """A choice as the user names it (``solver adam``)."""
        return f"{cls.choice_field} {choice}"

    def resolved_values(self) -> dict[str, object]:
        """Every setting, with the None ones that apply filled in from the choice's defaults
        and the preset."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        preset = self.presets.get(self.choice, {}).get(self.preset, {})
        for name, default in {**self.defaults[self.choice], **preset}.items():
            if values[name] is None:
                values[name] = default
        return values

    def resolved(self):
        """A copy with the choice's defaults filled in."""
        return replace(self, **self.resolved_values())

    def for_video(self):
        """A copy with ``video_defaults`` in the settings that neither the user nor the
        preset sets (not resolved)."""
        return self.with_defaults(self.video_defaults)

    def with_defaults(self, defaults: dict[str, object]):
        """A copy with ``defaults`` in the settings that neither the user nor the preset
        sets and that apply to the chosen solver (not resolved)."""
        preset = self.presets.get(self.choice, {}).get(self.preset, {})
        unset = {
            k: v
            for k, v in defaults.items()
            if getattr(self, k) is None and k not in preset and self.choice in self.applies_to.get(k, (self.choice,))
        }
        return replace(self, **unset)

    def check(self, s: dict[str, object]) -> None:
        """Validate the resolved values ``s`` (subclasses add their own checks)."""
        for name in self.counts:
            value = s.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise LRRError(f"{name} must be an integer >= 1, got {value!r}", parameter=name)
        for name in self.nonnegative:
            value = s.get(name)
            if value is not None and not value >= 0:
                raise LRRError(f"{name} must be >= 0, got {value}", parameter=name)
        if s.get("lr") is not None:
            check_learning_rate(s["lr"])
        estimator = s.get("estimator")
        if estimator is not None and estimator not in ESTIMATORS:
            raise LRRError(
                f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}", parameter="estimator"
            )
        if s.get("reg") is not None:
            self._regularizer(s)
        elif any(s.get(name) is not None for name in ("gamma", "p", "degree")):
            name = next(n for n in ("gamma", "p", "degree") if s.get(n) is not None)
            raise LRRError(f"{name} applies to a low-rank penalty, which {self.choice} does not use", parameter=name)

    def regularizer(self) -> LowRankRegularizer:
        """The low-rank regulariser these settings name (stochastic probes seeded by ``seed``)."""
        s = self.resolved_values()
        if s["reg"] is None:
            raise LRRError(f"{self.choice} uses no low-rank penalty", parameter="reg")
        return self._regularizer(s)

    def _regularizer(self, s: dict[str, object]) -> LowRankRegularizer:
        gamma = s["gamma"]
        penalty = PENALTIES.get(parse_reg(s["reg"])[1])
        if gamma is None and penalty is not None and "gamma" in penalty.parameters:
            gamma = self.default_gamma
        estimator = s["estimator"] or "auto"
        generator = torch.Generator().manual_seed(s["seed"]) if estimator == "stochastic" else None
        return LowRankRegularizer(
            s["reg"], estimator=estimator, gamma=gamma, p=s["p"], degree=s["degree"], generator=generator
        )


#: The settings that shape a task's patch groups, as :class:`lrrtool.priors.PatchGroupLift`
#: and :func:`lrrtool.tasks.budget.patch_tile` take them.
PATCH_OPTIONS = ("patch", "group", "stride", "window", "search_step")


def patch_options(settings: TaskSettings) -> dict[str, object]:
    """The patch-group geometry (``PATCH_OPTIONS``) of resolved ``settings``."""
    return {name: getattr(settings, name) for name in PATCH_OPTIONS}
