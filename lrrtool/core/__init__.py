"""Numerics of lrrtool: pure torch, no file or terminal I/O."""

from lrrtool.core.estimators import ESTIMATORS, SpectralFunction, choose_estimator
from lrrtool.core.penalties import PENALTIES, Penalty, make_penalty
from lrrtool.core.regularizer import LowRankRegularizer, parse_reg, regularizer_names
from lrrtool.core.series import SERIES

__all__ = [
    "ESTIMATORS",
    "PENALTIES",
    "SERIES",
    "LowRankRegularizer",
    "Penalty",
    "SpectralFunction",
    "choose_estimator",
    "make_penalty",
    "parse_reg",
    "regularizer_names",
]
