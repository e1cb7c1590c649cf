"""lrrtool: image and video restoration with differentiable low-rank regularisation."""

from lrrtool.core.regularizer import LowRankRegularizer
from lrrtool.errors import LRRError

__version__ = "0.1.0"

__all__ = ["LRRError", "LowRankRegularizer", "__version__"]
