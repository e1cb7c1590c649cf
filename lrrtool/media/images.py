"""Images and masks: read as float tensors ``(C, H, W)`` in ``[0, 1]``, written atomically."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lrrtool.errors import LRRError
from lrrtool.media.files import atomic_path, check_output, error_summary, existing_file

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def open_image(path: Path) -> Image.Image:
    path = existing_file(path, "an image file")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise LRRError(f"{path}: not a readable image ({error_summary(error)})") from None
    return image


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype == np.uint8:
        scaled = array.astype(np.float32) / 255
    elif array.dtype == np.uint16 or array.dtype == np.int32:
        scaled = array.astype(np.float32) / 65535
    else:
        scaled = np.clip(array.astype(np.float32), 0, 1)
    if scaled.ndim == 2:
        scaled = scaled[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as float32 ``(C, H, W)`` in ``[0, 1]``; C = 1 for grey, 3 otherwise.

    Alpha is dropped (composited nowhere: the colour channels are kept as stored);
    palette and CMYK images are converted to RGB; 16-bit images keep their precision.
    """
    image = open_image(Path(path))
    if image.mode in SIXTEEN_BIT_MODES:
        return _to_tensor(np.asarray(image).astype(np.uint16 if image.mode != "I" else np.int32))
    if image.mode in ("L", "1"):
        return _to_tensor(np.asarray(image.convert("L")))
    if image.mode == "LA":
        return _to_tensor(np.asarray(image)[:, :, 0])
    return _to_tensor(np.asarray(image.convert("RGB")))


def read_mask(
    path: str | Path,
    size: tuple[int, int],
    *,
    invert: bool = False,
    resize: bool = False,
) -> torch.Tensor:
    """A fill mask as a bool ``(H, W)`` tensor, True = pixel to fill.

    White (>= 50 % grey) means *fill*; in an image with an alpha channel, transparent
    (alpha < 50 %) means fill. ``invert`` flips the meaning (e.g. the TNNR benchmark masks,
    where black marks the missing pixels). ``size`` is the image's ``(H, W)``; a mask of
    another size is an error unless ``resize`` (nearest neighbour).
    """
    image = open_image(Path(path))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[:, :, 3]
        fill = alpha < 128
        if fill.all() or not fill.any():  # an opaque RGBA mask: use its grey values
            fill = np.asarray(image.convert("L")) >= 128
    else:
        fill = np.asarray(image.convert("L")) >= 128
    if invert:
        fill = ~fill
    height, width = size
    if fill.shape != (height, width):
        if not resize:
            raise LRRError(
                f"{path}: mask is {fill.shape[1]}x{fill.shape[0]} but the image is {width}x{height} "
                "(width x height); pass resize_mask to resize it with nearest neighbour",
                mentions=("resize_mask",),
            )
        resized = Image.fromarray(fill.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
        fill = np.asarray(resized) >= 128
    return torch.from_numpy(fill.copy())


def find_mask(image: str | Path, *, mask: str | Path | None = None, mask_dir: str | Path | None = None) -> Path:
    """The mask file of ``image``: ``mask`` itself, or in ``mask_dir`` the file of the same
    name, else the first file of the same stem (``photo.png`` for ``photo.jpg``)."""
    if mask is not None:
        return Path(mask)
    if mask_dir is None:
        raise LRRError("give mask or mask_dir", mentions=("mask", "mask_dir"))
    image, folder = Path(image), Path(mask_dir)
    if (folder / image.name).exists():
        return folder / image.name
    candidates = sorted(folder.glob(image.stem + ".*"))
    if not candidates:
        raise LRRError(f"{folder}: no mask named {image.stem}.*")
    return candidates[0]


def _quantize(image: torch.Tensor) -> np.ndarray:
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise LRRError(f"cannot write an image of shape {tuple(image.shape)}; expected (1 or 3, H, W)")
    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    array = image.cpu().numpy()
    array = array.transpose(1, 2, 0)
    return array[:, :, 0] if array.shape[2] == 1 else array


def write_image(path: str | Path, image: torch.Tensor, *, protect: Iterable[str | Path] = ()) -> Path:
    """Write ``(C, H, W)`` (float in ``[0, 1]``, or uint8) as 8-bit; the format follows the
    suffix."""
    path = check_output(path, protect, image=True)
    fmt = Image.registered_extensions()[path.suffix.lower()]
    array = _quantize(image)
    with atomic_path(path, protect) as tmp:
        try:
            Image.fromarray(array).save(tmp, format=fmt)
        except OSError as error:
            raise LRRError(f"{path}: cannot write ({error_summary(error)})") from None
    return path
