"""One image in, one image out: the work of ``inpaint`` and ``denoise`` on one input, as a
batch (here or in a Ray task) runs it. Reads and writes through :mod:`lrrtool.media`,
computes through :mod:`lrrtool.tasks`, returns the report's entry."""

from __future__ import annotations

import time
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
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    protect: list[Path] = (),
    memory_gib: float | None = None,
    callback: Callback | None = None,
) -> dict[str, object]:
    """Inpaint the image at ``path`` into ``target``: the pixels of ``mask`` (white = fill),
    or a random ``drop`` fraction seeded by ``settings.seed``, within ``memory_gib`` (None: no budget).
    ``callback``: the solver's progress. Returns the report entry."""
    image = media.read_image(path)
    size = tuple(image.shape[-2:])
    if drop is not None:
        fill = torch.rand(size, generator=torch.Generator().manual_seed(settings.seed)) < drop
    else:
        fill = media.read_mask(mask, size, invert=invert_mask, resize=resize_mask)
    clean = read_reference(reference, image, path)
    started = time.perf_counter()
    result, solve = inpaint(
        image.to(device, dtype), fill.to(device), settings, memory_gib=memory_gib, callback=trimming(callback)
    )
    seconds = time.perf_counter() - started
    media.write_image(target, result, protect=protect)
    entry = {"input": str(path), "output": str(target), "missing_fraction": float(fill.float().mean())}
    entry |= solve_entry(solve, seconds) | {"peak_memory_gib": peak_memory_gib(device)}
    return entry | reference_metrics(result, clean, observed=image, missing=fill)


def denoise_file(
    path: Path,
    target: Path,
    settings: DenoiseSettings,
    *,
    sigma: float | None = None,
    reference: Path | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    protect: list[Path] = (),
    memory_gib: float | None = None,
    callback: Callback | None = None,
) -> dict[str, object]:
    """Denoise the image at ``path`` into ``target``; ``sigma`` in ``[0, 1]`` units (None:
    estimated, :func:`lrrtool.tasks.denoise.estimate_sigma`), within ``memory_gib`` (None:
    no budget). ``callback``: the solver's progress. Returns the report entry."""
    noisy = media.read_image(path)
    level = estimate_sigma(noisy) if sigma is None else sigma
    clean_reference = read_reference(reference, noisy, path)
    started = time.perf_counter()
    clean, solve = denoise(noisy.to(device, dtype), level, settings, memory_gib=memory_gib, callback=trimming(callback))
    seconds = time.perf_counter() - started
    media.write_image(target, clean, protect=protect)
    entry = {"input": str(path), "output": str(target), "sigma_255": round(level * 255, 3)}
    entry |= {"sigma_estimated": sigma is None, **solve_entry(solve, seconds)}
    entry |= {"peak_memory_gib": peak_memory_gib(device)}
    return entry | reference_metrics(clean, clean_reference, observed=noisy)


#: The videos ``separate`` writes into its folder.
OUTPUT_VIDEOS = ("background", "foreground", "mask")
#: Their libx264 presets: the binary mask loses nothing at ``ultrafast`` (0.45 -> 0.21 s
#: for 120 720p frames).
VIDEO_PRESETS = {"background": media.X264_PRESET, "foreground": media.X264_PRESET, "mask": "ultrafast"}
