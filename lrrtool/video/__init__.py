"""Background/foreground separation of videos, robust-PCA style, streamed in chunks.

- :mod:`~lrrtool.video.objective`: the model (frames as columns, ``|V - X|_1 + lam R(X)``), its
  settings and the plain solve;
- :mod:`~lrrtool.video.mask`: the foreground mask (hysteresis on the residual, noise per region);
- :mod:`~lrrtool.video.lift`: solve small, lift to full size (temporal components fitted per pixel);
- :mod:`~lrrtool.video.budget`: frames per chunk within a memory budget;
- :mod:`~lrrtool.video.stream`: chunks in a stream (the background carried, the fade at borders).

Pure torch: files are read and written by :mod:`lrrtool.jobs` through :mod:`lrrtool.media`.
"""

from lrrtool.video.budget import chunk_frames_for
from lrrtool.video.lift import LiftedSolve, separate_lifted, temporal_spread, working_size
from lrrtool.video.mask import MASK_BATCH, foreground_mask, residual_mask
from lrrtool.video.objective import (
    BLEND_FRAMES,
    WORK_PIXELS,
    SeparateSettings,
    blend_frames,
    fade_weights,
    separate,
)
from lrrtool.video.stream import POOR_FIT_SPREAD, SeparatedChunk, separate_chunks

__all__ = [
    "BLEND_FRAMES",
    "MASK_BATCH",
    "POOR_FIT_SPREAD",
    "WORK_PIXELS",
    "LiftedSolve",
    "SeparateSettings",
    "SeparatedChunk",
    "blend_frames",
    "chunk_frames_for",
    "fade_weights",
    "foreground_mask",
    "residual_mask",
    "separate",
    "separate_chunks",
    "separate_lifted",
    "temporal_spread",
    "working_size",
]
