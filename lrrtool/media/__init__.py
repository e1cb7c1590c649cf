"""Reading and writing images, masks and videos: the only package that touches
imageio, pillow, OpenCV and ffmpeg.

Canonical layouts: an image is a float32 tensor ``(C, H, W)`` in ``[0, 1]`` with
``C`` = 1 (grey) or 3 (RGB); a video frame batch is ``(T, C, H, W)``. Writes are atomic
(temporary file in the target folder, then ``os.replace``) and refuse to overwrite any
path passed as ``protect`` (the inputs).
"""

from lrrtool.media.encoding import X264_PRESET, VideoWriter, add_audio, finish_all, join_videos
from lrrtool.media.files import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    atomic_path,
    check_output,
    existing_file,
    is_clip,
    make_folder,
    remove_empty,
    remove_partial,
    same_file,
    writable_folder,
)
from lrrtool.media.images import (
    ImageInfo,
    find_mask,
    image_losses,
    read_image,
    read_image_info,
    read_mask,
    write_image,
)
from lrrtool.media.videos import (
    STAGED_FRAMES,
    check_constant_rate,
    frame_files,
    read_video_chunks,
    stream_codecs,
    video_comment,
    video_probe,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "STAGED_FRAMES",
    "VIDEO_SUFFIXES",
    "X264_PRESET",
    "ImageInfo",
    "VideoWriter",
    "add_audio",
    "atomic_path",
    "check_constant_rate",
    "check_output",
    "existing_file",
    "find_mask",
    "finish_all",
    "frame_files",
    "image_losses",
    "is_clip",
    "join_videos",
    "make_folder",
    "read_image",
    "read_image_info",
    "read_mask",
    "read_video_chunks",
    "remove_empty",
    "remove_partial",
    "same_file",
    "stream_codecs",
    "video_comment",
    "video_probe",
    "writable_folder",
    "write_image",
]
