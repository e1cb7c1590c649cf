r"""Low-rank priors: a penalty :math:`R = \sum_i h(\sigma_i)` on the matrices a *lift*
makes of an image or a video.

A lift turns a signal into a batch of matrices ``(..., m, n)`` and folds matrices back:

- :class:`ChannelMatrices`: each channel of ``(C, H, W)`` is one ``H x W`` matrix (the
  EDLRR paper's model).
- :class:`PatchGroupLift`: groups of ``K`` similar ``p x p`` patches of ``(C, H, W)``,
  each a ``K x C p^2`` matrix, centred by its mean patch (:mod:`lrrtool.patches`); the
  groups are re-found on the current estimate by :meth:`Lift.refresh`.
- :class:`FramesAsColumns`: a video ``(T, C, H, W)`` as one ``C H W x T`` matrix.

:class:`LowRankPrior` joins a :class:`~lrrtool.core.LowRankRegularizer` and a lift. Its
``value(x)`` is differentiable with any estimator (the Adam route), and its
``prox(x, tau, debias)`` is one exact reweighted singular-value thresholding step
(:func:`lrrtool.core.prox.reweighted_threshold`). Both use the regulariser's spectral
function, so a series-prefixed ``reg`` (``laguerre-laplace``) is what runs in every solver.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from lrrtool.core import LowRankRegularizer
from lrrtool.core.prox import reweighted_threshold
from lrrtool.errors import LRRError
from lrrtool.patches import PatchGroups


class Lift(ABC):
    """Signal <-> batch of matrices ``(..., m, n)``."""

    #: Subtract each matrix's mean row before the penalty (and add it back after the prox).
    centred: bool = False

    @abstractmethod
    def matrices(self, x: Tensor) -> Tensor:
        """The matrices of ``x``, ``(..., m, n)``; differentiable."""

    @abstractmethod
    def fold(self, matrices: Tensor, x: Tensor) -> Tensor:
        """The signal the ``matrices`` describe, shaped like ``x``; entries no matrix
        covers keep the value of ``x``."""

    def refresh(self, x: Tensor) -> None:
        """Re-fit the lift to the current estimate ``x`` (no-op for fixed lifts)."""
        return None

    def matrix_shape(self, x: Tensor) -> tuple[int, int]:
        """``(m, n)`` of the matrices of ``x``."""
        m, n = self.matrices(x).shape[-2:]
        return int(m), int(n)


class ChannelMatrices(Lift):
    """Each channel of an image ``(C, H, W)`` is one ``H x W`` matrix."""

    def matrices(self, x: Tensor) -> Tensor:
        _check_ndim(x, 3, "an image (C, H, W)")
        return x

    def fold(self, matrices: Tensor, x: Tensor) -> Tensor:
        return matrices.reshape(x.shape)

    def matrix_shape(self, x: Tensor) -> tuple[int, int]:
        return int(x.shape[-2]), int(x.shape[-1])


class FramesAsColumns(Lift):
    """A video ``(T, C, H, W)`` is one ``(C H W) x T`` matrix: frames as columns."""

    def matrices(self, x: Tensor) -> Tensor:
        _check_ndim(x, 4, "a video (T, C, H, W)")
        return x.reshape(x.shape[0], -1).mT

    def fold(self, matrices: Tensor, x: Tensor) -> Tensor:
        return matrices.mT.reshape(x.shape)

    def matrix_shape(self, x: Tensor) -> tuple[int, int]:
        return int(x[0].numel()), int(x.shape[0])


class PatchGroupLift(Lift):
    """Groups of similar patches of an image ``(C, H, W)`` (see :class:`lrrtool.patches.PatchGroups`),
    each a centred ``K x C p^2`` matrix. Call :meth:`refresh` with an image before use;
    ``select`` (bool ``(H, W)``) keeps only groups whose reference patch touches it."""

    centred = True

    def __init__(
        self,
        *,
        patch: int,
        group: int,
        stride: int,
        window: int,
        search_step: int = 1,
        select: Tensor | None = None,
    ) -> None:
        self.options = {"patch": patch, "group": group, "stride": stride, "window": window, "search_step": search_step}
        self.select = select
        self.groups: PatchGroups | None = None

    def refresh(self, x: Tensor) -> None:
        _check_ndim(x, 3, "an image (C, H, W)")
        self.groups = PatchGroups(x.detach(), select=self.select, **self.options)

    def _found(self, x: Tensor) -> PatchGroups:
        if self.groups is None or self.groups.shape != x.shape:
            raise LRRError("the patch groups were found on no image of this shape; call refresh(x) first")
        return self.groups

    def matrices(self, x: Tensor) -> Tensor:
        return self._found(x).gather(x)

    def fold(self, matrices: Tensor, x: Tensor) -> Tensor:
        groups = self._found(x)
        return torch.where(groups.covered, groups.average(matrices), x)

    def matrix_shape(self, x: Tensor) -> tuple[int, int]:
        groups = self._found(x)
        return int(groups.index.shape[-1]), int(x.shape[0]) * self.options["patch"] ** 2


def noise_threshold(lam: float, noise: Tensor | float, count: int) -> tuple[Tensor | float, Tensor | float]:
    r"""``(tau, debias)`` of the weighted nuclear-norm step under noise of level
    :math:`\delta` (``noise``, a float or one per matrix): :math:`\tau = \lambda\sqrt{n}\delta^2`
    and :math:`\beta = n\delta^2`, where ``count`` :math:`n` is the noise energy per
    eigenvalue of the smaller Gram matrix in units of :math:`\delta^2` (WNNM, Gu et al. 2014)."""
    return lam * math.sqrt(count) * noise**2, count * noise**2


class LowRankPrior:
    r""":math:`R(x) = \sum_b \sum_i f(\sigma_i(M_b(x)))` for the matrices :math:`M_b` of a lift.

    Args:
        regularizer: the penalty and its estimator (for :meth:`value`); :meth:`prox`
            uses its spectral function ``f`` exactly (``h`` or the named series).
        lift: how ``x`` becomes matrices (see the module docstring).

    Example:
        >>> prior = LowRankPrior(LowRankRegularizer("nuclear"), ChannelMatrices())
        >>> x = torch.rand(3, 32, 32)
        >>> prior.value(x)            # sum of the singular values of the 3 channels
        >>> prior.prox(x, tau=0.5)    # every channel soft-thresholded by 0.5
    """

    def __init__(self, regularizer: LowRankRegularizer, lift: Lift) -> None:
        self.regularizer, self.lift = regularizer, lift

    @property
    def function(self):
        """The spectral function ``f`` (penalty, or its series) both routes use."""
        return self.regularizer.function

    def _centred(self, x: Tensor) -> tuple[Tensor, Tensor | float]:
        matrices = self.lift.matrices(x)
        if not self.lift.centred:
            return matrices, 0.0
        mean = matrices.mean(dim=-2, keepdim=True)
        return matrices - mean, mean

    def value(self, x: Tensor) -> Tensor:
        """The penalty of ``x``: a differentiable scalar."""
        centred, _ = self._centred(x)
        return self.regularizer(centred)

    def prox(self, x: Tensor, tau: Tensor | float, debias: Tensor | float = 0.0, *, refine: int = 0) -> Tensor:
        r"""One reweighted thresholding step on every matrix, folded back: shaped like ``x``.

        ``tau`` and ``debias`` are floats or one per matrix (see
        :func:`lrrtool.core.prox.reweighted_threshold`; :func:`noise_threshold` gives the
        weighted nuclear-norm pair for a noise level). With ``nuclear`` and ``debias = 0``
        it is the exact proximal map of :math:`\tau R`. Not differentiable."""
        with torch.no_grad():
            centred, mean = self._centred(x)
            shrunk = reweighted_threshold(centred, self.function, tau, debias, refine=refine)
            return self.lift.fold(shrunk + mean, x)

    def refresh(self, x: Tensor) -> None:
        """Re-fit the lift (re-find patch groups) on the estimate ``x``."""
        self.lift.refresh(x)


def _check_ndim(x: Tensor, ndim: int, what: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != ndim:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise LRRError(f"expected {what}, got {shape}")


#: Lifts by name (contract tests and docs).
LIFTS: dict[str, type[Lift]] = {
    "channels": ChannelMatrices,
    "patch-groups": PatchGroupLift,
    "frames": FramesAsColumns,
}
