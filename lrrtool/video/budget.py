"""Chunk sizing: the frames a chunk may hold within a memory budget."""

import torch

from lrrtool.errors import LRRError
from lrrtool.tasks.budget import RUNTIME_GIB
from lrrtool.video.lift import FIT_BAND_VALUES, MAX_COMPONENTS, PRIOR_FRAMES, working_size
from lrrtool.video.mask import MASK_BATCH
from lrrtool.video.objective import (
    BLEND_FRAMES,
    DEFAULT_CHUNK_FRAMES,
    MEMORY_FRAMES,
    WORKING_COPIES,
    SeparateSettings,
    blend_frames,
)


def chunk_frames_for(
    frame_shape: tuple[int, int, int],
    dtype: torch.dtype,
    settings: SeparateSettings,
    *,
    memory_gib: float,
    chunk_frames: int | None = None,
    staged_frames: int = 0,
) -> int:
    """Frames per chunk for frames ``(C, H, W)`` of ``dtype``: ``chunk_frames`` (default
    200) or fewer, so that what a chunk holds, with its look-ahead (:func:`blend_frames`),
    stays within ``memory_gib``, besides ``staged_frames`` uint8 frames that the caller's
    decoder holds.

    ``work_pixels`` 0 (robust PCA on the frames themselves): the solver's working copies
    of the chunk and the carried frames. Otherwise (:func:`separate_lifted`): per frame
    the uint8 frame, its mask and the working solve's copies; fixed: the coefficients,
    the fit's band temporaries, the carried and prior frames, and a batch of the mask
    rule and of the output. Both: the fade carried from the previous chunk (its
    look-ahead's background, or a second set of coefficients). ``RUNTIME_GIB`` of the
    budget is left to the process itself."""
    C, H, W = frame_shape
    s = settings.resolved()
    h, w = working_size(H, W, s.work_pixels)
    bytes_per_value = torch.finfo(dtype).bits // 8
    copies = WORKING_COPIES[settings.choice]
    if s.work_pixels == 0:
        per_frame, fixed = C * H * W * bytes_per_value * copies, BLEND_FRAMES * C * H * W * bytes_per_value
    else:
        per_frame = C * H * W + H * W + C * h * w * bytes_per_value * copies
        fixed = FIT_BAND_VALUES * bytes_per_value * LIFT_BAND_COPIES + (MEMORY_FRAMES + PRIOR_FRAMES) * C * H * W
        fixed += 2 * MAX_COMPONENTS * C * H * W * bytes_per_value  # the coefficients, and the fade's
        fixed += MASK_BATCH * max(MASK_COPIES * H * W * bytes_per_value, OUTPUT_COPIES * C * H * W)  # not at once
    fixed += staged_frames * C * H * W
    held = int(((memory_gib - RUNTIME_GIB) * 2**30 - fixed) // per_frame) - MEMORY_FRAMES  # chunk + look-ahead
    if held < 3:
        raise LRRError(
            f"memory_gib {memory_gib} does not hold frames of {W}x{H}: use scale/size, grey or a larger budget",
            parameter="memory_gib",
            mentions=("scale", "size", "grey"),
        )
    frames = held
    while frames + blend_frames(frames) > held:  # the longest chunk whose look-ahead fits too
        frames -= 1
    return min(chunk_frames or DEFAULT_CHUNK_FRAMES, frames)


#: Frame-sized float temporaries per frame of a batch of the mask rule.
MASK_COPIES = 4
#: uint8 copies of a frame while a batch is written (background, foreground view, the
#: writers' layout).
OUTPUT_COPIES = 5
#: Band-sized temporaries :func:`robust_fit` and :func:`separate_lifted` hold at once.
LIFT_BAND_COPIES = 7
#: A frame whose mask covers more than this fraction is counted as poorly fitted.
