"""What every task's settings share: the choice of low-rank regulariser and of solver."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from lrrtool.core import PENALTIES, LowRankRegularizer, parse_reg
from lrrtool.errors import LRRError


@dataclass(frozen=True)
class RegularizerSettings:
    """``reg``, its parameters and estimator; ``seed`` seeds the stochastic probes."""

    reg: str = "nuclear"
    gamma: float | None = None
    p: float | None = None
    degree: int | None = None
    estimator: str = "auto"
    seed: int = 0

    #: gamma used when ``gamma`` is None and the penalty takes one; None = the penalty's own.
    default_gamma: ClassVar[float | None] = None

    def regularizer(self) -> LowRankRegularizer:
        gamma = self.gamma
        penalty = PENALTIES.get(parse_reg(self.reg)[1])
        if gamma is None and penalty is not None and "gamma" in penalty.parameters:
            gamma = self.default_gamma
        generator = torch.Generator().manual_seed(self.seed) if self.estimator == "stochastic" else None
        return LowRankRegularizer(
            self.reg, estimator=self.estimator, gamma=gamma, p=self.p, degree=self.degree, generator=generator
        )


class ChoiceDefaults:
    """Mixin for frozen settings dataclasses whose defaults depend on one choice field
    (``choice_field``, e.g. the solver or the method). Settings left as None take the
    chosen value's defaults from ``choice_defaults``."""

    #: The field whose value picks the defaults.
    choice_field: ClassVar[str] = "solver"
    #: ``{choice: {setting: default}}`` for the settings whose default depends on the choice.
    choice_defaults: ClassVar[dict[str, dict[str, object]]] = {}
    #: Settings that must be integers >= 1 once resolved.
    at_least_one: ClassVar[tuple[str, ...]] = ("iters",)

    def resolved(self):
        """A copy with every None setting filled in with the choice's default."""
        choice = getattr(self, self.choice_field)
        defaults = self.choice_defaults.get(choice)
        if defaults is None:
            known = ", ".join(self.choice_defaults)
            raise LRRError(f"unknown {self.choice_field} {choice!r}; choose one of: {known}")
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def validate(self) -> None:
        """Refuse an unknown choice and counts below 1 (subclasses add their own checks)."""
        s = self.resolved()
        for name in self.at_least_one:
            value = getattr(s, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise LRRError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class SolverSettings(ChoiceDefaults, RegularizerSettings):
    """Adds ``solver``: ``threshold`` (exact spectral shrinkage) or ``adam`` (the paper's
    gradient route). Settings left as None take the chosen solver's default."""

    solver: str = "threshold"

    choice_defaults: ClassVar[dict[str, dict[str, object]]] = {"threshold": {}, "adam": {}}
