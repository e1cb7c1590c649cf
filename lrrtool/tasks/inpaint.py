r"""Inpainting: fill the masked pixels of an image by low-rank regularised completion.

A task is a start, a forward model, a prior, a solver and a schedule:

- start (:mod:`lrrtool.tasks.starts`): the biharmonic interpolant or, where the mask has
  wide holes and a held-out test says so, a global rank-``r`` completion;
- forward model: :class:`lrrtool.forward.Inpainting` (observed pixels known exactly;
  they are copied into the result unchanged);
- prior (:class:`lrrtool.priors.LowRankPrior`): ``model="patches"`` (default), groups of
  ``K`` similar ``p x p`` patches (all channels jointly, so colours share one low-rank
  structure), centred, re-found on the estimate every ``regroup_every`` steps; or
  ``model="global"``, the EDLRR paper's model, each channel one ``H x W`` matrix;
- solver, by ``solver``:

  - ``threshold`` (default): :func:`lrrtool.solvers.proximal_gradient`, exact reweighted
    singular-value thresholding of every group, weights :math:`f'(\hat\sigma)` of the
    named penalty (or its series), with the observed pixels re-imposed after each step.
    Schedule: a noise level :math:`\delta_t` falling geometrically from ``noise_start``
    to ``noise_end``, :math:`\tau_t = \lambda\sqrt{k}\delta_t^2`, :math:`\beta_t = k\delta_t^2`
    (``k`` = the smaller side of a group). With ``reg="lnn"`` this is the WNNM weighting.
  - ``adam``: the EDLRR paper's route, :func:`lrrtool.solvers.adam` on
    :math:`\mu \sum_c \|\Delta X_c\|^2 + \lambda R(X)` with ``R`` from any estimator.

- ``method="dlrl"`` replaces all of that by the DLRL paper's network on the ``H x CW``
  matrix (:func:`lrrtool.recsys.complete_matrix`).

A video ``(T, C, H, W)`` (``threshold`` on patch groups) starts from what the other
frames show where they agree with it, and the harmonic fill elsewhere
(:func:`lrrtool.tasks.temporal.temporal_start`), and its groups are searched
in the ``reach`` frames before and after each reference's own too, so a fill agrees with
the neighbouring frames' and does not flicker; ``InpaintSettings.video_defaults`` apply.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from lrrtool.errors import LRRError
from lrrtool.forward import Inpainting
from lrrtool.priors import ChannelMatrices, LowRankPrior, PatchGroupLift, noise_threshold
from lrrtool.settings import TaskSettings, patch_options
from lrrtool.solvers import PIXEL_BOUNDS, SOLVERS, Callback, Progress, SolveResult, adam, proximal_gradient
from lrrtool.tasks.budget import check_whole_groups, frame_span, patch_tile
from lrrtool.tasks.starts import SMOOTH_FILLS, START_RANKS, laplacian_energy, start_by_region, wide_hole
from lrrtool.tasks.temporal import camera_search, frame_shifts, temporal_start

MODELS = ("patches", "global")
#: ``auto``: :func:`choose_start` (biharmonic or low rank); ``biharmonic``, ``harmonic``:
#: always that smooth fill (:data:`SMOOTH_FILLS`; a video's default is ``harmonic``).
STARTS = ("auto", *SMOOTH_FILLS)
#: ``lrr``: the low-rank solvers; ``dlrl``: the DLRL paper's network.
INPAINT_METHODS = ("lrr", "dlrl")

_LOW_RANK = ("threshold", "adam")
#: Image-sized tensors the threshold solver holds at once (input, estimate, start, gradient
#: step, the sum of the patch estimates, the result, the change's temporary).
INPAINT_BUFFERS = 7
#: Where a clip keeps its start (:func:`keeps_start`): the frame-sized float copies it
#: holds at once (the chunk, its observed copy, the canvas of aligned frames, the start,
#: the spatial fill's stacked frames, the clamped result), and the share of the budget
#: after the runtime they may take, since no tiles of patch groups follow.
START_BUFFERS = 6
START_SHARE = 0.9


@dataclass(frozen=True)
class InpaintSettings(TaskSettings):
    """Settings of :func:`inpaint`; the defaults are the measured best (``bench/inpaint.py``).

    ``method`` ``lrr`` runs ``solver`` (``threshold`` or ``adam``); ``dlrl`` runs the
    DLRL network (``width``, ``factors``, ``p_block``, ``iters``, ``lr``). Settings left
    as None take the chosen solver's default (``defaults``); a setting of another solver
    is refused (``applies_to``). ``noise_start``/``noise_end`` (pixel units) shape the
    threshold schedule, ``smooth`` weighs the biharmonic energy under Adam.
    ``start_ranks`` (increasing) and ``start_margin`` (dB) go to :func:`choose_start`.
    ``reach``: the frames a video's groups are searched in before and after their own.
    """

    method: str = "lrr"
    solver: str | None = None
    model: str | None = None
    start: str | None = None
    smooth: float | None = None
    noise_start: float | None = None
    noise_end: float | None = None
    regroup_every: int | None = None
    subspace: bool | None = None
    patch: int | None = None
    group: int = 32
    stride: int | None = None
    window: int | None = None
    search_step: int = 2
    reach: int | None = None
    start_ranks: tuple[int, ...] = START_RANKS
    start_margin: float = 2.0
    width: int | None = None
    factors: int | None = None
    p_block: float | None = None

    default_gamma: ClassVar[float | None] = 1e-3  # singular values of [0, 1] patch groups
    # The start already holds what the other frames show, and the harmonic fill the rest;
    # the refinement's steps barely move it. Measured on bench/video.py's clips (20
    # frames; missing-pixel PSNR, start alone -> after 4 steps; seconds in process):
    # - caption + logo: vtest 24.22 -> 24.21 (0.8 -> 5.1 s), vtest-pan 21.27 -> 21.26,
    #   tree 21.13 -> 21.12; flicker 3.30 / 9.39 / 5.44 -> 3.31 / 9.62 / 5.22;
    # - 3-5 px scribbles: 26.41 -> 26.45, 32.08 -> 31.96, 21.41 -> 21.42, and on the pan
    #   the steps raise flicker from 1.72 to 2.68;
    # - a 50 % random drop: 29.07 -> 29.16 (1.0 -> 17.5 s), 35.81 -> 36.04; one drop mask
    #   per frame: 33.19 -> 33.58, 35.64 -> 35.89; thin text (1-2 px): 28.14 -> 28.34,
    #   38.23 -> 38.17, 23.30 -> 23.33.
    # So a clip whose mask is mostly holes (``has_holes``) keeps the start unless
    # ``iters`` is given, and scattered or thin masks get 4 steps (8 scored as 4).
    video_defaults: ClassVar[dict[str, object]] = {
        "reach": 2, "window": 8, "iters": 4, "regroup_every": 4, "start": "harmonic"
    }  # fmt: skip
    _lrr: ClassVar[dict[str, object]] = {
        "reg": "lnn", "model": "patches", "start": "auto", "patch": 5, "stride": 5, "window": 15
    }  # fmt: skip
    # Holes (see ``HOLE_FRACTION``): larger patches on a coarser grid and a stronger
    # threshold. Measured against the defaults, missing-pixel PSNR: 512x512 photos
    # (bench/inpaint.py --photos) text +0.59, scribbles +0.26 dB at 0.9x the time; TNNR
    # square +0.03, square_small +0.06; the 12 MP photo's thick scribbles +0.17
    # (bench/scale_images.py). Not for scattered drops: TNNR 20 % drop lost 1.04 dB; not
    # after a low-rank start: the facade's 134 px block (rank 3) lost 0.51 dB.
    hole_defaults: ClassVar[dict[str, object]] = {"patch": 6, "stride": 6, "lam": 8.0, "noise_start": 0.1}
    defaults: ClassVar[dict[str, dict[str, object]]] = {
        "threshold": {
            **_lrr,
            "solver": "threshold",
            "lam": 4.0,
            "iters": 16,
            "regroup_every": 4,
            "noise_start": 0.05,
            "noise_end": 0.004,
            # Only each group's largest pairs (see DenoiseSettings): 512x512 photos
            # (bench/inpaint.py --photos cases, in process, two workers) 30 % drop
            # 12.4 -> 10.1 s, 60 % drop 12.9 -> 10.9 s, text and scribbles the same time;
            # missing-pixel PSNR within 0.002 dB. Late steps keep most values and run
            # the exact eigh.
            "subspace": True,
        },
        "adam": {
            **_lrr,
            "solver": "adam",
            "lam": 0.3,
            "iters": 200,
            "regroup_every": 50,
            "lr": 0.02,
            "estimator": "auto",
            "smooth": 1.0,
        },
        "dlrl": {"iters": 500, "lr": 0.005, "width": 80, "factors": 2, "p_block": 1.0},
    }
    # Measured on the 512x512 photos (bench/inpaint.py --photos cases), against the default,
    # missing-pixel PSNR on 30 % drop/60 % drop/text/scribbles: fast -0.56/-0.37/-0.46/-0.17
    # dB at 0.36x the time (on a grid of 6 instead: -0.48/-0.31/-0.35/-0.14 dB at 0.49x, but
    # the hole settings' grid is 6 already). best (earlier run, before the hole settings, on
    # 60 % drop/scribbles): +0.23/+0.08 dB at 1.5x the time (stride 4 instead was -0.03 dB).
    presets: ClassVar[dict[str, dict[str, dict[str, object]]]] = {
        "threshold": {"fast": {"iters": 8, "stride": 8}, "best": {"iters": 24}},
    }
    applies_to: ClassVar[dict[str, tuple[str, ...]]] = {
        **dict.fromkeys(
            (
                "reg",
                "gamma",
                "p",
                "degree",
                "lam",
                "solver",
                "model",
                "start",
                "regroup_every",
                "stride",
                "window",
                "reach",
            ),
            _LOW_RANK,
        ),
        "estimator": ("adam",),
        "smooth": ("adam",),
        "lr": ("adam", "dlrl"),
        "noise_start": ("threshold",),
        "subspace": ("threshold",),
        "noise_end": ("threshold",),
        **dict.fromkeys(("width", "factors", "p_block"), ("dlrl",)),
    }
    counts: ClassVar[tuple[str, ...]] = ("iters", "patch", "group", "stride", "window", "search_step", "regroup_every")
    nonnegative: ClassVar[tuple[str, ...]] = ("lam", "smooth", "reach")

    @property
    def choice(self) -> str:
        return "dlrl" if self.method == "dlrl" else self.solver or "threshold"

    @classmethod
    def describe(cls, choice: str) -> str:
        return "method dlrl" if choice == "dlrl" else f"solver {choice}"

    def __post_init__(self) -> None:
        _one_of("method", self.method, INPAINT_METHODS)
        if self.solver is not None:
            _one_of("solver", self.solver, SOLVERS)
        super().__post_init__()

    def check(self, s: dict[str, object]) -> None:
        super().check(s)
        if s["model"] is not None:
            _one_of("model", s["model"], MODELS)
        if s["start"] is not None:
            _one_of("start", s["start"], STARTS)
        ranks = s["start_ranks"]
        if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks):
            raise LRRError(f"start_ranks must be integers >= 1, got {ranks!r}", parameter="start_ranks")
        if list(ranks) != sorted(set(ranks)):
            raise LRRError(f"start_ranks must be increasing, got {ranks!r}", parameter="start_ranks")
        if not math.isfinite(s["start_margin"]):
            raise LRRError(f"start_margin must be a finite number of dB, got {s['start_margin']}")
        if s["noise_start"] is not None and not 0 < s["noise_end"] <= s["noise_start"]:
            raise LRRError(
                f"noise_end must be in (0, noise_start], got {s['noise_end']} and {s['noise_start']}",
                parameter="noise_end",
            )
        if s["method"] == "dlrl":
            self.dlrl_settings(s)

    def dlrl_settings(self, s: dict[str, object] | None = None):
        """The rating-completion settings of ``method="dlrl"``."""
        from lrrtool.recsys.settings import CompletionSettings

        s = s or self.resolved_values()
        return CompletionSettings(
            method="dlrl",
            width=s["width"],
            factors=s["factors"],
            p_block=s["p_block"],
            iters=s["iters"],
            lr=s["lr"],
            seed=s["seed"],
        )


def _one_of(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise LRRError(f"{name} must be one of {', '.join(choices)}, got {value!r}", parameter=name)


def inpaint(
    image: Tensor,
    fill: Tensor,
    settings: InpaintSettings = InpaintSettings(),
    *,
    memory_gib: float | None = None,
    own: slice = slice(None),
    callback: Callback | None = None,
) -> tuple[Tensor, SolveResult]:
    """Fill the pixels where ``fill`` is True.

    The start is found a cluster of holes at a time (:func:`start_by_region`) and the
    patch groups only around the holes, so the cost follows the missing pixels.

    Args:
        image: ``(C, H, W)`` float tensor, or a video ``(T, C, H, W)``; values under ``fill``
            are ignored.
        fill: bool ``(H, W)`` on the same device, True = missing (for a video: one mask for
            every frame, or ``(T, H, W)``).
        settings: see :class:`InpaintSettings`.
        memory_gib: the process's budget (None: none): the threshold solver works a tile
            of groups at a time within it (the same result); ``adam`` on patch groups holds
            them all and is refused when they do not fit.
        own: a video's frames whose result is wanted (a chunk's, without the frames around
            it); where the start is kept (:func:`keeps_start`) only these are filled.
        callback: progress of the start (per cluster of holes) and of the solver.

    Returns:
        ``(result, solve_result)``; ``result[..., ~fill] == image[..., ~fill]`` exactly;
        ``solve_result.details["start"]`` says which start was used.
    """
    video = image.ndim == 4
    asked = settings
    settings = settings.for_video() if video else settings
    s = settings.resolved()
    if image.ndim not in (3, 4):
        raise LRRError(f"expected an image (C, H, W) or a video (T, C, H, W), got {tuple(image.shape)}")
    if video and (s.method, s.solver, s.model) != ("lrr", "threshold", "patches"):
        raise LRRError("a video is inpainted by the threshold solver on patch groups only", parameter="solver")
    frames_ok = fill.ndim == 2 or (video and fill.ndim == 3 and fill.shape[0] in (1, image.shape[0]))
    if fill.shape[-2:] != image.shape[-2:] or not frames_ok:
        raise LRRError(f"mask shape {tuple(fill.shape)} does not match image {tuple(image.shape[-2:])}")
    fill = fill.to(device=image.device, dtype=torch.bool)
    if video:
        fill = fill.expand(image.shape[0], *fill.shape[-2:])
    start_only = video and keeps_start(fill, asked)
    missing = int(fill.sum())
    if missing == 0:
        raise LRRError("the mask marks no pixel to fill (is it inverted? see invert_mask)", mentions=("invert_mask",))
    if missing == fill.numel():
        raise LRRError("the mask marks every pixel as missing: nothing is observed to fill from")
    if not bool(torch.isfinite(image.masked_fill(fill[:, None] if video else fill, 0)).all()):
        raise LRRError("the image holds NaN/Inf values")
    # Holes get their own settings (see ``hole_defaults``) when the start is a smooth fill, not a low-rank one.
    hole_s = None
    if not video and s.solver == "threshold" and s.model == "patches" and has_holes(fill):
        hole_s = settings.with_defaults(settings.hole_defaults).resolved()
    forward = Inpainting(image, fill[:, None] if video else fill)
    if s.method == "dlrl":
        out, result = _dlrl(forward, s, callback)
        return forward.project(out.clamp(0, 1)), result
    options = patch_options(s)
    shifts = frame_shifts(forward.observed, fill) if video else None
    if video and s.reach:
        options["temporal"] = camera_search(shifts, s.reach)
    tile = None
    if s.model == "patches" and s.solver == "threshold" and not start_only:
        tile = patch_tile(image, memory_gib, buffers=INPAINT_BUFFERS, select=fill, **options)
        if hole_s is not None:
            hole_tile = patch_tile(image, memory_gib, buffers=INPAINT_BUFFERS, select=fill, **patch_options(hole_s))
    elif s.model == "patches" and s.solver != "threshold":
        check_whole_groups(image, memory_gib, solver=s.solver, select=fill, **options)
    began = time.perf_counter()

    def started(done: int, total: int) -> None:
        if callback is not None:
            callback(Progress(done, total, "", math.nan, phase="start"))

    started(0, 1)
    if video:
        smooth = s.start if s.start in SMOOTH_FILLS else "harmonic"
        start, details = temporal_start(
            forward.observed, fill, shifts=shifts, smooth=smooth, wanted=own if start_only else slice(None),
            progress=started,
        )  # fmt: skip
    else:
        start, details = start_by_region(
            forward.observed, fill, test=s.start == "auto", smooth=s.start if s.start in SMOOTH_FILLS else "biharmonic",
            ranks=s.start_ranks, margin_db=s.start_margin, progress=started,
        )  # fmt: skip
    start_seconds = time.perf_counter() - began
    if start_only:
        details["phase_seconds"] = {"start": round(start_seconds, 3), "refine": 0.0}
        details["refined"] = False
        return forward.project(start.clamp(0, 1)), SolveResult(0, "change", 0.0, True, start_seconds, details=details)
    holes = hole_s is not None and details["start"] in SMOOTH_FILLS
    if holes:
        s, options, tile = hole_s, patch_options(hole_s), hole_tile
    span = frame_span(image)
    lift = ChannelMatrices() if s.model == "global" else PatchGroupLift(select=fill, tile=tile, span=span, **options)
    prior = LowRankPrior(s.regularizer(), lift, subspace=bool(s.subspace))
    if s.solver == "threshold":
        out, result = proximal_gradient(
            forward,
            prior,
            start,
            _falling_noise(s, prior),
            iters=s.iters,
            min_iters=s.iters,
            refresh_every=s.regroup_every,
            callback=callback,
        )
    else:

        def objective(x: Tensor) -> Tensor:
            loss = s.smooth * laplacian_energy(x)
            return loss + s.lam * prior.value(x) if s.lam > 0 else loss

        out, result = adam(
            objective, start, forward=forward, prior=prior, refresh_every=s.regroup_every, iters=s.iters, lr=s.lr,
            bounds=PIXEL_BOUNDS, callback=callback,
        )  # fmt: skip
    result.details.update(details)
    if video:
        result.details["refined"] = True
    if holes:
        result.details["hole_settings"] = {k: getattr(s, k) for k in settings.hole_defaults}
    result.details["tile"] = tile  # reference positions a side; None: one tile
    result.details["phase_seconds"] = {"start": round(start_seconds, 3), "refine": round(result.seconds, 3)}
    return forward.project(out.clamp(0, 1)), result


#: A mask "has holes" when at least this fraction of its missing pixels have no observed
#: pixel among their 8 neighbours (text, scribbles, blocks), and then
#: ``InpaintSettings.hole_defaults`` apply. Measured fractions: random drops of 20-60 %
#: 0.000-0.017, the TNNR text mask (1 px strokes) 0.001, the text mask resized to 512 px
#: 0.27-0.32, 3-7 px scribbles 0.63-0.68, the 12 MP photo's 9-21 px scribbles 0.84, the
#: TNNR squares 0.86-0.97.
HOLE_FRACTION = 0.1


def keeps_start(fill: Tensor, settings: InpaintSettings) -> bool:
    """Whether a clip with the mask ``fill`` (``(H, W)`` or ``(T, H, W)``) keeps its start
    without refinement steps: its mask is mostly holes and ``settings`` ask for no steps
    (see ``InpaintSettings.video_defaults``)."""
    return settings.iters is None and has_holes(fill)


def has_holes(fill: Tensor) -> bool:
    """Whether the mask ``fill`` ``(H, W)``, or a clip's ``(T, H, W)``, is mostly holes
    rather than scattered pixels (:data:`HOLE_FRACTION`)."""
    if fill.ndim == 3 and fill.stride(0) == 0:  # one mask for every frame: its first says it
        fill = fill[0]
    return int(wide_hole(fill, 1).sum()) >= HOLE_FRACTION * int(fill.sum())


def _falling_noise(s: InpaintSettings, prior: LowRankPrior):
    """The threshold schedule: a noise level falling geometrically over the steps."""

    def schedule(step: int, x: Tensor):
        delta = s.noise_start * (s.noise_end / s.noise_start) ** (step / max(s.iters - 1, 1))
        return noise_threshold(s.lam, delta, min(prior.lift.matrix_shape(x)))

    return schedule


def _dlrl(forward: Inpainting, s: InpaintSettings, callback: Callback | None) -> tuple[Tensor, SolveResult]:
    """The DLRL paper's image recovery: one ``H x C W`` matrix (channels side by side)
    completed from its observed pixels."""
    from lrrtool.recsys import complete_matrix

    c, h, w = forward.observed.shape
    matrix = forward.observed.permute(1, 0, 2).reshape(h, c * w)
    observed = (~forward.missing).repeat(1, c)
    dense, result = complete_matrix(matrix, observed, s.dlrl_settings(), callback=callback)
    return dense.reshape(h, c, w).permute(1, 0, 2), result
