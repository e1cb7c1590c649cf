r"""Gaussian denoising with a low-rank prior on groups of similar patches.

``Y`` is the noisy image and :math:`\sigma` the noise level (``[0, 1]`` units). The
forward model is :class:`lrrtool.forward.GaussianNoise`; the prior is a
:class:`lrrtool.priors.LowRankPrior` on ``K x D`` groups of similar patches, centred by
their mean patch (all channels of a patch form one vector). Two solvers:

- ``threshold`` (default): WNNM's scheme (Gu et al. 2014) with any penalty, as
  :func:`lrrtool.solvers.proximal_gradient`. The gradient step on the data term with
  step :math:`\eta = \delta\sigma^2` is WNNM's feedback,
  :math:`Y_k = X_{k-1} + \delta (Y - X_{k-1})`; the groups are re-found on :math:`Y_k`
  every ``regroup_every`` steps. The schedule re-estimates the remaining noise of each
  group from its own patches ``P``,
  :math:`\sigma_k = \rho\sqrt{|\sigma^2 - \mathrm{mean}_P(Y - Y_k)^2|}`
  (:math:`\sigma_1 = \sigma`), and shrinks every group with threshold
  :math:`\lambda\sqrt{n}\sigma_k^2` and weights :math:`f'(\hat\sigma)`,
  :math:`\hat\sigma^2 = \max(\sigma^2 - n\sigma_k^2, 0)`, :math:`n = \max(K, D)` (the noise
  energy per eigenvalue of the smaller Gram matrix; for :math:`K \ge D` and ``reg=lnn``
  this is exactly WNNM's weighting).
- ``adam``: the paper's route, :func:`lrrtool.solvers.adam` on
  :math:`\frac{1}{2\sigma^2}\|X - Y\|_F^2 + \frac{\lambda'}{\sigma^2} R(X)` with any
  estimator, groups found once on ``Y``.

A video ``(T, C, H, W)`` is denoised the same way, its groups searched in the ``reach``
frames before and after each reference's own as well (:mod:`lrrtool.patches`): a still
scene gives each group the same patch under ``2 reach + 1`` noise draws, a moving one
finds it where it moved within the window. A grey clip's patches span two frames
(``depth``, :func:`lrrtool.tasks.temporal.frame_cubes`: cubes that follow the camera, as
BM4D's span frames). ``DenoiseSettings.video_defaults`` are the settings a video takes
where neither the user nor the preset sets them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import ClassVar

from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.forward import GaussianNoise
from lrrtool.patches import GROUP_BATCH, PatchGroups
from lrrtool.priors import LowRankPrior, PatchGroupLift, noise_threshold
from lrrtool.settings import TaskSettings, patch_options
from lrrtool.solvers import PIXEL_BOUNDS, Callback, SolveResult, adam, proximal_gradient
from lrrtool.tasks.budget import check_whole_groups, frame_span, patch_plan
from lrrtool.tasks.temporal import camera_search, frame_cubes, frame_shifts, from_cubes

#: Patch side and group size by image kind when neither the user nor the preset sets
#: them: ``D = C p^2`` = 36 (grey) and 75 (colour); measured best (``bench/denoise.py``).
IMAGE_DEFAULTS = {"grey": {"patch": 6, "group": 48}, "colour": {"patch": 5, "group": 64}}


@dataclass(frozen=True)
class DenoiseSettings(TaskSettings):
    """Settings of :func:`denoise`. Settings left as None take the solver's default and
    the preset's changes; ``patch`` and ``group`` then come from :data:`IMAGE_DEFAULTS`
    (grey or colour). ``feedback`` :math:`\\delta`, ``rescale`` :math:`\\rho`, ``refine``,
    ``regroup_every`` and ``subspace`` (only the largest singular pairs of each group,
    :class:`lrrtool.priors.LowRankPrior`) belong to ``threshold``; ``lr`` and ``estimator`` to ``adam``.
    ``stride`` is the step of the reference-patch grid, ``window`` the search radius,
    ``reach`` the frames searched each way in a video (0 in an image), ``frame_window``
    the search radius in those other frames (None: ``window``), ``depth`` the frames
    each patch of a video spans (:func:`lrrtool.tasks.temporal.frame_cubes`; 1 in an
    image)."""

    solver: str | None = None
    patch: int | None = None
    group: int | None = None
    stride: int | None = None
    window: int | None = None
    search_step: int = 1
    regroup_every: int | None = None
    feedback: float | None = None
    rescale: float | None = None
    refine: int | None = None
    subspace: bool | None = None
    reach: int | None = None
    frame_window: int | None = None
    depth: int | None = None

    default_gamma: ClassVar[float | None] = 1e-3  # singular values of [0, 1] patch groups
    # A clip's groups are the patch where it is (or where the camera took it) in the 9
    # frames before and after, 1 px around it, and the 5x5 positions around it in its own
    # frame; small groups. Large windows and groups (window 7, frame_window 2-3, groups of
    # 64-96, the defaults until the eleventh session) filled a group with shifted copies
    # and smoothed still detail away: on vtest (still camera) the error over still pixels
    # was mostly constant over time and not noise (docs/video.md). Measured in process,
    # 20 frames (old -> these): vtest grey sigma 25 33.91 -> 34.67 dB (BM4D 34.27),
    # vtest-pan grey sigma 20 35.60 -> 36.52, tree colour sigma 25 29.06 -> 29.43, the pan
    # in colour 35.61 -> 36.94, a zooming and turning clip -0.01 to +0.11; 0.4-0.6x the time.
    video_defaults: ClassVar[dict[str, object]] = {
        "reach": 9, "frame_window": 1, "window": 2, "iters": 6, "group": 32, "rescale": 0.55,
    }  # fmt: skip
    # A grey clip's patches are 6x6 over two frames (frame_cubes), as BM4D's cubes span
    # frames (5x5x2 with the old groups: vtest 33.17 -> 33.91 dB, the pan 34.72 -> 35.59;
    # not aligned with the camera, the pan lost 0.52 dB). 5x5x2 in groups of 24: vtest
    # 34.55, the pan 36.31, at 0.55-0.6x the time. Colour cubes lost 0.2 dB on tree.
    # No reach of its own: a clip's chunks are planned with video_defaults' reach before
    # any chunk is known to be grey (jobs.clips.denoise_clip).
    grey_video_defaults: ClassVar[dict[str, object]] = {"depth": 2, "patch": 6}
    _lift: ClassVar[dict[str, object]] = {"stride": 4, "window": 15}
    defaults: ClassVar[dict[str, dict[str, object]]] = {
        "threshold": {
            **_lift,
            "solver": "threshold",
            "reg": "lnn",
            "lam": 2.8,
            "iters": 12,
            "regroup_every": 2,
            "feedback": 0.1,
            "rescale": 0.52,
            "refine": 0,
            "subspace": True,
        },
        "adam": {**_lift, "solver": "adam", "reg": "lnn", "lam": 1.0, "iters": 150, "lr": 0.01, "estimator": "auto"},
    }
    # bench/denoise.py --presets, full-size images, against the default: fast 3.9-6.8x
    # quicker at -0.11 to -1.25 dB per image (fewer steps need a larger rescale; colour
    # loses most), best 1.7-1.9x slower at -0.03 to +0.03 dB per image.
    presets: ClassVar[dict[str, dict[str, dict[str, object]]]] = {
        "threshold": {
            "fast": {"iters": 6, "rescale": 0.65, "stride": 6, "group": 40},
            "best": {"stride": 3},
        }
    }
    applies_to: ClassVar[dict[str, tuple[str, ...]]] = {
        **dict.fromkeys(("regroup_every", "feedback", "rescale", "refine", "subspace"), ("threshold",)),
        **dict.fromkeys(("lr", "estimator"), ("adam",)),
    }
    counts: ClassVar[tuple[str, ...]] = (
        "iters", "patch", "group", "stride", "window", "search_step", "regroup_every", "depth"
    )  # fmt: skip
    nonnegative: ClassVar[tuple[str, ...]] = ("lam", "feedback", "rescale", "refine", "reach", "frame_window")

    def for_video(self, grey: bool = False) -> DenoiseSettings:
        """A copy with ``video_defaults`` (for a ``grey`` clip ``grey_video_defaults`` first)
        in the settings that neither the user nor the preset sets (not resolved)."""
        return (self.with_defaults(self.grey_video_defaults) if grey else self).with_defaults(self.video_defaults)

    def for_image(self, channels: int, frames: int = 0) -> DenoiseSettings:
        """Resolved settings, with the patch and group sizes of a grey or colour image, and
        the video defaults (:meth:`for_video`) for a video of ``frames`` frames (0: an
        image, reach 0)."""
        s = (self.for_video(grey=channels == 1) if frames else self).resolved()
        kind = IMAGE_DEFAULTS["grey" if channels == 1 else "colour"]
        return replace(
            s, patch=s.patch or kind["patch"], group=s.group or kind["group"], reach=s.reach or 0,
            depth=(s.depth or 1) if frames else 1,
        )  # fmt: skip


#: Image-sized tensors the threshold solver holds at once (input, estimate, gradient step,
#: the sum of the patch estimates, the result, temporaries of the change and the schedule).
DENOISE_BUFFERS = 7


def estimate_sigma(image: Tensor) -> float:
    """Noise level in ``[0, 1]`` units: median absolute deviation of the finest diagonal
    Haar detail coefficients / 0.6745 (Donoho & Johnstone), averaged over channels."""
    x = image[..., : image.shape[-2] // 2 * 2, : image.shape[-1] // 2 * 2]
    detail = (x[..., ::2, ::2] - x[..., 1::2, ::2] - x[..., ::2, 1::2] + x[..., 1::2, 1::2]) / 2
    return float(detail.flatten(1).abs().median(dim=1).values.mean() / 0.6745)


#: :func:`estimate_clip_sigma` leaves out frames with more than this share of their values
#: at black or white, where clipping hides the noise (a noisy black frame has half its
#: values at 0 and estimates a third low).
CLIPPED_SHARE = 0.2


def estimate_clip_sigma(frames: Tensor) -> float:
    """Noise level in ``[0, 1]`` units of a clip's ``frames`` ``(T, C, H, W)``: the median
    of :func:`estimate_sigma` over the frames that are not mostly black or white
    (``CLIPPED_SHARE``), or over all when every frame is. A frame at a time: no copy of
    the chunk."""
    levels, kept = [], []
    for frame in frames:
        levels.append(estimate_sigma(frame))
        if float(((frame <= 0) | (frame >= 1)).float().mean()) <= CLIPPED_SHARE:
            kept.append(levels[-1])
    return statistics.median(kept or levels)


def denoise(
    noisy: Tensor,
    sigma: float,
    settings: DenoiseSettings = DenoiseSettings(),
    *,
    memory_gib: float | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, SolveResult]:
    """Denoise ``noisy`` ``(C, H, W)``, or a video ``(T, C, H, W)``, in ``[0, 1]`` with noise level
    ``sigma`` (``[0, 1]`` units).

    ``memory_gib``: the process's budget (None: none); the threshold solver works a tile
    of groups at a time to stay within it (the same result), ``adam`` holds every group
    and is refused when they do not fit. Returns ``(clean, solve_result)``, ``clean`` shaped
    like ``noisy``, in ``[0, 1]``.
    """
    if noisy.ndim not in (3, 4):
        raise LRRError(f"expected an image (C, H, W) or a video (T, C, H, W), got {tuple(noisy.shape)}")
    s = settings.for_image(noisy.shape[-3], noisy.shape[0] if noisy.ndim == 4 else 0)
    if min(noisy.shape[-2:]) < s.patch:
        raise LRRError(f"the image ({noisy.shape[-1]}x{noisy.shape[-2]}) is smaller than one patch")
    options = patch_options(s)
    depth = min(s.depth, noisy.shape[0]) if noisy.ndim == 4 else 1
    if noisy.ndim == 4 and (s.reach or depth > 1):
        shifts = frame_shifts(noisy)
        if s.reach:
            options["temporal"] = camera_search(shifts, s.reach, s.frame_window)
        if depth > 1:  # the clip of cubes has the clip's frames, so the same search
            clean, result = _denoise(frame_cubes(noisy, shifts, depth), sigma, s, options, memory_gib, callback)
            return from_cubes(clean, shifts, depth).clamp(0, 1), result
    clean, result = _denoise(noisy, sigma, s, options, memory_gib, callback)
    return clean.clamp(0, 1), result


def _denoise(
    noisy: Tensor, sigma: float, s: DenoiseSettings, options: dict, memory_gib: float | None, callback: Callback | None
) -> tuple[Tensor, SolveResult]:
    """:func:`denoise`'s solve of ``noisy`` (an image, a video, or a video's
    :func:`lrrtool.tasks.temporal.frame_cubes`) with the resolved settings ``s`` and the
    lift's ``options``; not clamped."""
    forward = GaussianNoise(noisy, sigma)
    tile, batch = None, GROUP_BATCH
    if s.solver == "threshold":
        tile, batch = patch_plan(noisy, memory_gib, buffers=DENOISE_BUFFERS, **options)
    else:
        check_whole_groups(noisy, memory_gib, solver="adam", **options)
    lift = PatchGroupLift(tile=tile, span=frame_span(noisy), batch=batch, **options)
    prior = LowRankPrior(s.regularizer(), lift, subspace=bool(s.subspace))
    if s.solver == "threshold":
        clean, result = proximal_gradient(
            forward,
            prior,
            noisy,
            _remaining_noise_schedule(forward, prior, s),
            iters=s.iters,
            min_iters=s.iters,
            step=s.feedback * sigma**2,
            refresh_every=s.regroup_every,
            refine=s.refine,
            callback=callback,
        )
    else:
        # lam is relative to the noise: the penalty weight grows with sigma like the data term shrinks.
        weight = s.lam * sigma * (s.patch**2 * noisy.shape[-3]) ** 0.5 / sigma**2
        clean, result = adam(
            lambda x: forward.value(x) + weight * prior.value(x), noisy, prior=prior, iters=s.iters, lr=s.lr,
            bounds=PIXEL_BOUNDS, callback=callback,
        )  # fmt: skip
    result.details["tile"] = tile  # reference positions a side; None: one tile
    return clean, result


def _remaining_noise_schedule(forward: GaussianNoise, prior: LowRankPrior, s: DenoiseSettings):
    """WNNM's schedule: the noise level left in each group of the current point."""

    def schedule(step: int, y: Tensor):
        level = forward.sigma
        if step:
            level = remaining_noise(forward.observed, y, forward.sigma, prior.lift.groups, s.rescale)
        return noise_threshold(s.lam, level, max(prior.lift.matrix_shape(y)))

    return schedule


def remaining_noise(noisy: Tensor, current: Tensor, sigma: float, groups: PatchGroups, rescale: float) -> Tensor:
    r"""Noise level left in ``current`` for each group ``(G,)``, estimated on the group's own
    pixels ``P``: :math:`\rho\sqrt{|\sigma^2 - \mathrm{mean}_P (Y - Y_k)^2|}`.

    WNNM takes the mean over the reference patch alone; over the whole group it is less
    noisy and measured better (``bench/denoise.py`` images at sigma 25: moon 36.28 ->
    36.62, camera 29.94 -> 29.87, coins 28.71 -> 28.70 dB; chelsea sigma 50 29.32 ->
    29.36). One level for the whole image was 0.03-0.27 dB worse than either."""
    removed = groups.group_means((noisy - current).square())
    return rescale * (sigma**2 - removed).abs().sqrt()
