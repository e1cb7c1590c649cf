"""What every task's settings share: the choice of low-rank regulariser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from lrrtool.core import PENALTIES, LowRankRegularizer, parse_reg


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
