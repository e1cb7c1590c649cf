"""One image in, one image out: the work of ``inpaint`` and ``denoise`` on one input, as a
batch (here or in a Ray task) runs it. Reads and writes through :mod:`lrrtool.media`,
computes through :mod:`lrrtool.tasks`, returns the report's entry."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from lrrtool import media
from lrrtool.errors import LRRError
from lrrtool.jobs.runtime import peak_memory_gib, trimming
from lrrtool.metrics import psnr, ssim
from lrrtool.solvers import Callback, SolveResult
from lrrtool.tasks.denoise import DenoiseSettings, denoise, estimate_sigma
from lrrtool.tasks.inpaint import InpaintSettings, inpaint


def solve_entry(result: SolveResult, seconds: float) -> dict[str, object]:
    """The report fields of one solve."""
    return {
        "seconds": round(seconds, 3),
        "iterations": result.iterations,
        "converged": result.converged,
        "final": {result.metric: result.value},
        **result.details,
    }


def read_reference(reference: Path | None, observed: Tensor, source: Path) -> Tensor | None:
    """The clean image at ``reference`` (None: none), refused before any work when its
    shape differs from the input's."""
    if reference is None:
        return None
    clean = media.read_image(reference)
    if clean.shape != observed.shape:
        raise LRRError(f"{reference}: shape {tuple(clean.shape)} differs from {source} {tuple(observed.shape)}")
    return clean


def reference_metrics(
    estimate: Tensor, clean: Tensor | None, *, observed: Tensor, missing: Tensor | None = None
) -> dict[str, dict[str, float]]:
    """``{"metrics": {...}}``: PSNR/SSIM of ``estimate`` against the ``clean`` image, also
    of the input ``observed``, and, for inpainting, on the ``missing`` pixels alone;
    ``{}`` without a reference."""
    if clean is None:
        return {}
    out = estimate.float().cpu()
    metrics = {"psnr": psnr(out, clean), "ssim": ssim(out, clean)}
    if missing is None:
        metrics["psnr_input"] = psnr(observed, clean)
    else:
        metrics["psnr_missing"] = psnr(out, clean, missing.cpu())
    return {"metrics": metrics}


#: The ``mask`` that names the image's own transparent pixels.
ALPHA_MASK = "alpha"


@dataclass(frozen=True)
class Placement:
    """Where one image's work runs: ``device``, ``dtype``, the memory budget ``memory_gib``
    (None: none), and the files it must never overwrite (``protect``)."""

    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    memory_gib: float | None = None
    protect: tuple[Path, ...] = ()


def inpaint_file(
    path: Path,
    target: Path,
    settings: InpaintSettings,
    *,
    mask: Path | None = None,
    drop: float | None = None,
    invert_mask: bool = False,
    resize_mask: bool = False,
    reference: Path | None = None,
    place: Placement = Placement(),
    callback: Callback | None = None,
) -> dict[str, object]:
    """Inpaint the image at ``path`` into ``target``: the pixels of ``mask`` (white = fill;
    ``ALPHA_MASK``: the image's transparent pixels, made opaque in the output), or a
    random ``drop`` fraction seeded by ``settings.seed``. What the file carries (alpha,
    16 bits, ICC, EXIF) is kept where the output's format holds it. ``callback``: the
    solver's progress. Returns the report entry."""
    image, info = media.read_image_info(path)
    size = tuple(image.shape[-2:])
    if drop is not None:
        fill = torch.rand(size, generator=torch.Generator().manual_seed(settings.seed)) < drop
    elif str(mask) == ALPHA_MASK:
        if info.alpha is None:
            raise LRRError(f"{path}: mask alpha asks for its transparent pixels, but it has no alpha channel",
                           parameter="mask")  # fmt: skip
        fill = info.alpha[0] < 0.5
        info = replace(info, alpha=torch.where(fill, 1.0, info.alpha[0])[None])
    else:
        fill = media.read_mask(mask, size, invert=invert_mask, resize=resize_mask)
    clean = read_reference(reference, image, path)
    started = time.perf_counter()
    observed = image.to(place.device, place.dtype)
    result, solve = inpaint(observed, fill.to(place.device), settings, memory_gib=place.memory_gib,
                            callback=trimming(callback, place.memory_gib))  # fmt: skip
    entry = {"input": str(path), "output": str(target), "missing_fraction": float(fill.float().mean())}
    entry |= _written(target, result, solve, started, place, info)
    return entry | reference_metrics(result, clean, observed=image, missing=fill)


def denoise_file(
    path: Path,
    target: Path,
    settings: DenoiseSettings,
    *,
    sigma: float | None = None,
    reference: Path | None = None,
    place: Placement = Placement(),
    callback: Callback | None = None,
) -> dict[str, object]:
    """Denoise the image at ``path`` into ``target``; ``sigma`` in ``[0, 1]`` units (None:
    estimated, :func:`lrrtool.tasks.denoise.estimate_sigma`). ``callback``: the solver's
    progress. Returns the report entry."""
    noisy, info = media.read_image_info(path)
    level = estimate_sigma(noisy) if sigma is None else sigma
    clean_reference = read_reference(reference, noisy, path)
    started = time.perf_counter()
    observed = noisy.to(place.device, place.dtype)
    clean, solve = denoise(
        observed, level, settings, memory_gib=place.memory_gib, callback=trimming(callback, place.memory_gib)
    )
    entry = {"input": str(path), "output": str(target), "sigma_255": round(level * 255, 3)}
    entry |= {"sigma_estimated": sigma is None, **_written(target, clean, solve, started, place, info)}
    return entry | reference_metrics(clean, clean_reference, observed=noisy)


def _written(
    target: Path, result: Tensor, solve: SolveResult, started: float, place: Placement, info: media.ImageInfo
) -> dict:
    """Write ``result`` to ``target`` with what the input carried (``info``); the report
    fields of the solve, its time (from ``started``, not counting the write), the
    process's peak memory, and ``warnings``: what the output's format could not keep."""
    seconds = time.perf_counter() - started
    media.write_image(target, result, protect=place.protect, info=info)
    entry = solve_entry(solve, seconds) | {"peak_memory_gib": peak_memory_gib(place.device)}
    losses = media.image_losses(target, info)
    return entry | ({"warnings": losses} if losses else {})
