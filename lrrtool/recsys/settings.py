"""The settings of rating completion: its methods and their measured defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lrrtool.errors import LRRError
from lrrtool.settings import TaskSettings

METHODS = ("blend", "lrr", "autorec", "dlrl", "mf")


_LRR_DEFAULTS: dict[str, object] = {
    "reg": "nuclear",
    "estimator": "auto",
    "lam": 10.0,
    "iters": 250,  # 400 steps at lr 0.02 gave the same blend RMSE (bench/complete.py) in 1.6x the time
    "lr": 0.03,
    "width": 20,
}


@dataclass(frozen=True)
class CompletionSettings(TaskSettings):
    r"""Settings of :func:`complete`; defaults measured on MovieLens-100K (``bench/complete.py``).

    ``width`` is the factor width ``d`` (``autorec``: the hidden units); ``factors``
    (``I``) and ``p_block`` (:math:`p_i`, the Schatten exponent of every factor, so
    :math:`1/p = I/p_i`) are DLRL's. ``lam`` weighs the penalty of ``mf``/``lrr`` and the
    weight decay of ``autorec``; ``iters`` is Adam steps (``autorec``: the most epochs,
    early stopping on a 5 % hold-out); ``weight_power`` :math:`\beta` sets the row and
    column weights :math:`w \propto n^\beta` (``n`` = observed entries of that row or
    column) of ``lrr``'s penalty; ``bias_reg`` regularises the bias model. Settings left
    as None take the method's defaults; ``blend``'s settings are those of its ``lrr``
    member (its autoencoders keep ``autorec``'s defaults). A setting that a method does
    not use is refused (``applies_to``).
    """

    method: str = "blend"
    width: int | None = None
    factors: int | None = None
    p_block: float | None = None
    weight_power: float | None = None
    bias_reg: float = 5.0

    default_gamma: ClassVar[float | None] = 1.0
    choice_field: ClassVar[str] = "method"
    defaults: ClassVar[dict[str, dict[str, object]]] = {
        "blend": {**_LRR_DEFAULTS, "weight_power": 0.5},
        "lrr": {**_LRR_DEFAULTS, "weight_power": 0.5},
        "autorec": {"lam": 100.0, "iters": 60, "lr": 0.001, "width": 500},
        "dlrl": {"iters": 300, "lr": 0.001, "width": 20, "factors": 4, "p_block": 1.0},
        "mf": {"lam": 20.0, "iters": 400, "lr": 0.02, "width": 20},
    }
    applies_to: ClassVar[dict[str, tuple[str, ...]]] = {
        **dict.fromkeys(("reg", "gamma", "p", "degree", "estimator", "weight_power"), ("blend", "lrr")),
        "lam": ("blend", "lrr", "autorec", "mf"),
        **dict.fromkeys(("factors", "p_block"), ("dlrl",)),
    }
    counts: ClassVar[tuple[str, ...]] = ("width", "factors", "iters")
    nonnegative: ClassVar[tuple[str, ...]] = ("lam", "bias_reg", "weight_power")

    def check(self, s: dict[str, object]) -> None:
        super().check(s)
        if s["method"] == "dlrl" and s["factors"] < 2:
            raise LRRError(f"factors must be >= 2 for DLRL, got {s['factors']}", parameter="factors")
        if s["p_block"] is not None and not 0 < s["p_block"] < 2:
            raise LRRError(f"p_block must be in (0, 2), got {s['p_block']}", parameter="p_block")
