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
from collections.abc import Callable

import torch
from torch import Tensor

from lrrtool.core import LowRankRegularizer
from lrrtool.core.prox import reweighted_threshold
from lrrtool.errors import LRRError
from lrrtool.patches import GROUP_BATCH, OWN_FRAME, PatchGroups, TemporalSearch

#: ``progress(done, total)``: parts of a lift's work finished.
Tick = Callable[[int, int], None]


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

    def refresh(self, x: Tensor, progress: Tick | None = None) -> None:
        """Re-fit the lift to the current estimate ``x`` (no-op for fixed lifts);
        ``progress(done, total)`` as parts of the work finish."""
        return None

    def map_matrices(self, x: Tensor, work: Callable[[Tensor, slice], Tensor], progress: Tick | None = None) -> Tensor:
        """``fold(work(matrices(x), part), x)``: ``work`` gets matrices and their place
        ``part`` in the whole batch and returns new ones. A lift that can hands them over
        a part at a time (bounded memory); by default all at once."""
        return self.fold(work(self.matrices(x), slice(None)), x)

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
    """Groups of similar patches of an image ``(C, H, W)`` or a video ``(T, C, H, W)`` (searched
    other frames as ``temporal`` says; see :class:`lrrtool.patches.PatchGroups`), each a centred
    ``K x C p^2`` matrix. Call :meth:`refresh` with a signal before use;
    ``select`` (bool ``(H, W)``, or ``(T, H, W)``) keeps only groups whose reference patch touches it;
    ``tile``: the groups are found and shrunk a tile of ``tile x tile`` reference
    positions (and ``span`` frames) at a time (None: at once; the result is the same), and
    ``batch`` groups at a time within it."""

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
        tile: int | None = None,
        temporal: TemporalSearch = OWN_FRAME,
        span: int | None = None,
        batch: int = GROUP_BATCH,
    ) -> None:
        self.options = {"patch": patch, "group": group, "stride": stride, "window": window, "search_step": search_step}
        self.options |= {"temporal": temporal, "span": span, "batch": batch}
        self.tile = tile
        self.select = select
        self.groups: PatchGroups | None = None

    def refresh(self, x: Tensor, progress: Tick | None = None) -> None:
        if x.ndim != 4:
            _check_ndim(x, 3, "an image (C, H, W) or a video (T, C, H, W)")
        self.groups = None  # the old groups' memory is free while the new ones are found
        self.groups = PatchGroups(x.detach(), select=self.select, tile=self.tile, progress=progress, **self.options)

    def _found(self, x: Tensor) -> PatchGroups:
        if self.groups is None or self.groups.shape != x.shape:
            raise LRRError("the patch groups were found on no image of this shape; call refresh(x) first")
        return self.groups

    def matrices(self, x: Tensor) -> Tensor:
        return self._found(x).gather(x)

    def fold(self, matrices: Tensor, x: Tensor) -> Tensor:
        groups = self._found(x)
        return torch.where(groups.covered, groups.average(matrices), x)

    def map_matrices(self, x: Tensor, work: Callable[[Tensor, slice], Tensor], progress: Tick | None = None) -> Tensor:
        return self._found(x).map(x, work, progress)

    def matrix_shape(self, x: Tensor) -> tuple[int, int]:
        return self._found(x).size, int(x.shape[-3]) * self.options["patch"] ** 2


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
        subspace: :meth:`prox` finds only the largest singular pairs of each matrix
            (:func:`lrrtool.core.prox.reweighted_threshold`), as many as the last
            :meth:`prox` kept (:func:`subspace_widths`: one width per matrix); False: all of them, exactly.

    Example:
        >>> prior = LowRankPrior(LowRankRegularizer("nuclear"), ChannelMatrices())
        >>> x = torch.rand(3, 32, 32)
        >>> prior.value(x)            # sum of the singular values of the 3 channels
        >>> prior.prox(x, tau=0.5)    # every channel soft-thresholded by 0.5
    """

    def __init__(self, regularizer: LowRankRegularizer, lift: Lift, *, subspace: bool = False) -> None:
        self.regularizer, self.lift, self.subspace = regularizer, lift, subspace
        self.kept: Tensor | None = None  # the singular values each matrix kept in the last prox

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

    def prox(
        self, x: Tensor, tau: Tensor | float, debias: Tensor | float = 0.0, *, refine: int = 0,
        progress: Tick | None = None,
    ) -> Tensor:  # fmt: skip
        r"""One reweighted thresholding step on every matrix, folded back: shaped like ``x``.

        ``tau`` and ``debias`` are floats or one per matrix (see
        :func:`lrrtool.core.prox.reweighted_threshold`; :func:`noise_threshold` gives the
        weighted nuclear-norm pair for a noise level). With ``nuclear`` and ``debias = 0``
        it is the exact proximal map of :math:`\tau R`. Not differentiable.
        ``progress(done, total)`` follows the lift's parts."""

        widths = None
        if self.subspace and self.kept is not None:
            widths = subspace_widths(self.kept, min(self.lift.matrix_shape(x)))
        kept: list[tuple[int, Tensor]] = []  # (first matrix of a part, what its matrices kept)

        def shrink(matrices: Tensor, part: slice) -> Tensor:
            mean = matrices.mean(dim=-2, keepdim=True) if self.lift.centred else None
            weights = _part(tau, part), _part(debias, part)
            width = None if widths is None else widths[part]
            if width is not None and width.numel() != matrices.shape[:-2].numel():
                width = None  # other matrices than the last prox's (re-found): exact
            counts: list[Tensor] = []
            shrunk = reweighted_threshold(
                matrices if mean is None else matrices - mean, self.function, *weights, refine=refine,
                subspace=width, kept=counts,
            )  # fmt: skip
            kept.append((part.start or 0, counts[0].flatten()))
            return shrunk if mean is None else shrunk + mean

        with torch.no_grad():
            out = self.lift.map_matrices(x, shrink, progress)
        if self.subspace and kept:
            self.kept = torch.cat([counts for _, counts in sorted(kept, key=lambda part: part[0])])
        return out

    def refresh(self, x: Tensor, progress: Tick | None = None) -> None:
        """Re-fit the lift (re-find patch groups) on the estimate ``x``."""
        self.lift.refresh(x, progress)


#: :func:`subspace_widths`: the margin added to what a matrix kept, and the largest width
#: worth it (a share of the small side; wider is solved exactly).
WIDTH_MARGIN, WIDTH_SHARE = 2, 0.5


def subspace_widths(kept: Tensor, side: int) -> Tensor:
    """The block width of each matrix in the next subspace prox: the singular values it
    kept in the last (``kept``) plus ``WIDTH_MARGIN``; ``side`` (exact) when that is over
    ``WIDTH_SHARE`` of the small side ``side``: a matrix the block misses is redone
    exactly, so a block that misses costs more than one ``eigh``.

    Groups keep few values, and how many varies much (denoise, 512x512 camera, sigma 25:
    from the third step half the groups keep none and 10 % keep 11-16 of 36; a width per
    group, not one for all (the 90th percentile, until the ninth session), took ``eigh``
    and QR from 7.2 to 4.0 s on that image, one thread)."""
    widths = kept + WIDTH_MARGIN
    return widths.masked_fill(widths > WIDTH_SHARE * side, side)


def _part(value: Tensor | float, part: slice) -> Tensor | float:
    """The entries of a per-matrix ``value`` for the matrices ``part``; a scalar as it is."""
    return value[part] if isinstance(value, Tensor) and value.ndim else value


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
