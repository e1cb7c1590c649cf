"""The application layer: one call per command, a frozen request in, the report out.

    from lrrtool import jobs

    report = jobs.inpaint(jobs.InpaintRequest(["photo.jpg"], mask=Path("text-mask.png")))

does what ``lrrtool inpaint photo.jpg --mask text-mask.png`` does (same outputs, same
report). Requests: :mod:`~lrrtool.jobs.requests`; progress: :class:`Update` values to a
listener (:mod:`~lrrtool.jobs.progress`); a batch over inputs, output names, the
overwrite rule and Ray: :mod:`~lrrtool.jobs.batch`; the work on one input:
:mod:`~lrrtool.jobs.images`, :mod:`~lrrtool.jobs.videos`, :mod:`~lrrtool.jobs.ratings`.
"""

from lrrtool.jobs.commands import complete, denoise, inpaint, separate
from lrrtool.jobs.progress import Listener, Update
from lrrtool.jobs.requests import (
    OUTPUT_VIDEOS,
    CompleteRequest,
    DenoiseRequest,
    InpaintRequest,
    Outputs,
    Runtime,
    SeparateRequest,
)

__all__ = [
    "OUTPUT_VIDEOS",
    "CompleteRequest",
    "DenoiseRequest",
    "InpaintRequest",
    "Listener",
    "Outputs",
    "Runtime",
    "SeparateRequest",
    "Update",
    "complete",
    "denoise",
    "inpaint",
    "separate",
]
