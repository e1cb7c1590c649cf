"""Images and masks: read as float tensors ``(C, H, W)`` in ``[0, 1]``, written atomically."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lrrtool.errors import LRRError
from lrrtool.media.files import atomic_path, check_output, error_summary, existing_file

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
#: EXIF tag of the orientation (1: stored upright).
ORIENTATION_TAG = 0x0112
#: What each output format can hold besides 8-bit colour.
FORMAT_HOLDS = {
    "PNG": {"alpha", "16 bits", "ICC profile", "EXIF"},
    "TIFF": {"alpha", "16 bits", "ICC profile", "EXIF"},
    "JPEG": {"ICC profile", "EXIF"},
    "WEBP": {"alpha", "ICC profile", "EXIF"},
    "BMP": {"alpha"},
}


@dataclass(frozen=True)
class ImageInfo:
    """What an image file carries besides its colour pixels, kept for the outputs made
    from it: ``alpha`` ``(1, H, W)`` float in ``[0, 1]`` (None: opaque), ``bits`` per
    channel (8 or 16), the ``icc`` profile and the ``exif`` block (its orientation set to
    1, since the pixels are made upright on read), the ``orientation`` that was applied,
    and whether the pixels are ``colour`` (else grey)."""

    bits: int = 8
    alpha: torch.Tensor | None = None
    icc: bytes | None = None
    exif: bytes | None = None
    orientation: int = 1
    colour: bool = True

    def carried(self) -> set[str]:
        """What of this an output should hold."""
        kept = {"alpha": self.alpha is not None, "16 bits": self.bits == 16, "ICC profile": self.icc is not None}
        kept["EXIF"] = self.exif is not None
        return {name for name, present in kept.items() if present}


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


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """``image`` ``(..., H, W)`` as displayed for the EXIF ``orientation`` (1-8), as
    Pillow's ``ImageOps.exif_transpose`` turns it."""
    flips = {2: (-1,), 3: (-1, -2), 4: (-2,), 5: (), 6: (-1,), 7: (-1, -2), 8: (-2,)}
    if orientation not in flips:
        return image
    turned = image.transpose(-1, -2) if orientation >= 5 else image
    return turned.flip(flips[orientation]) if flips[orientation] else turned


def _sixteen_bit_colour(path: Path, image: Image.Image) -> bool:
    """Whether ``path`` is a 16-bit colour PNG or TIFF, which Pillow reads as 8 bits."""
    if image.format == "PNG":
        with open(path, "rb") as file:
            header = file.read(26)
        return len(header) == 26 and header[24] == 16 and header[25] in (2, 6)  # bit depth, RGB(A)
    if image.format == "TIFF":
        return image.mode in ("RGB", "RGBA") and max(image.tag_v2.get(258, (8,))) == 16
    return False


def _read_sixteen_bit_colour(path: Path) -> np.ndarray:
    """A 16-bit RGB(A) PNG or TIFF as uint16 ``(H, W, 3 or 4)`` (OpenCV: Pillow has no
    16-bit colour modes)."""
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16 or array.ndim != 3:
        raise LRRError(f"{path}: not a readable 16-bit colour image")
    return cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def read_image_info(path: str | Path) -> tuple[torch.Tensor, ImageInfo]:
    """An image file as float32 ``(C, H, W)`` in ``[0, 1]`` (C = 1 for grey, 3 otherwise),
    upright (its EXIF orientation applied), and what else it carries (:class:`ImageInfo`):
    its alpha channel, bit depth (16-bit PNG and TIFF, grey or colour, keep their
    precision), ICC profile and EXIF. Palette and CMYK images are converted to RGB."""
    path = Path(path)
    image = open_image(path)
    exif = image.getexif()
    orientation = int(exif.get(ORIENTATION_TAG, 1) or 1)
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = 1
    alpha, bits = None, 8
    if _sixteen_bit_colour(path, image):
        array, bits = _read_sixteen_bit_colour(path), 16
        colour, alpha = (array[:, :, :3], array[:, :, 3]) if array.shape[2] == 4 else (array, None)
    elif image.mode in SIXTEEN_BIT_MODES:
        colour, bits = np.asarray(image).astype(np.uint16 if image.mode != "I" else np.int32), 16
    elif image.mode in ("L", "1"):
        colour = np.asarray(image.convert("L"))
    elif image.mode == "LA":
        colour, alpha = np.asarray(image)[:, :, 0], np.asarray(image)[:, :, 1]
    elif image.mode in ("RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        colour, alpha = rgba[:, :, :3], rgba[:, :, 3]
    else:
        colour = np.asarray(image.convert("RGB"))
    info = ImageInfo(
        bits=bits,
        colour=colour.ndim == 3,
        alpha=None if alpha is None else upright(_to_tensor(alpha), orientation),
        icc=image.info.get("icc_profile") or None,
        exif=exif.tobytes() if len(exif) else None,
        orientation=orientation,
    )
    return upright(_to_tensor(colour), orientation), info


def read_image(path: str | Path) -> torch.Tensor:
    """The pixels of :func:`read_image_info`: float32 ``(C, H, W)`` in ``[0, 1]``, upright."""
    return read_image_info(path)[0]


def read_mask(
    path: str | Path,
    size: tuple[int, int],
    *,
    invert: bool = False,
    resize: bool = False,
) -> torch.Tensor:
    """A fill mask as a bool ``(H, W)`` tensor, True = pixel to fill.

    White (>= 50 % grey) means *fill*; in an image with an alpha channel, transparent
    (alpha < 50 %) means fill. The mask is matched upright (its own EXIF orientation
    applied), as the image is. ``invert`` flips the meaning (e.g. the TNNR benchmark masks,
    where black marks the missing pixels). ``size`` is the image's ``(H, W)``; a mask of
    another size is an error unless ``resize`` (nearest neighbour).
    """
    image = open_image(Path(path))
    orientation = int(image.getexif().get(ORIENTATION_TAG, 1) or 1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[:, :, 3]
        fill = alpha < 128
        if fill.all() or not fill.any():  # an opaque RGBA mask: use its grey values
            fill = np.asarray(image.convert("L")) >= 128
    else:
        fill = np.asarray(image.convert("L")) >= 128
    fill = upright(torch.from_numpy(fill.copy()), orientation).numpy()
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


def _quantize(image: torch.Tensor, bits: int = 8) -> np.ndarray:
    """``(C, H, W)`` as an ``(H, W[, C])`` array of ``bits`` per channel (uint8 or uint16)."""
    if image.ndim != 3 or image.shape[0] not in (1, 2, 3, 4):
        raise LRRError(f"cannot write an image of shape {tuple(image.shape)}; expected (1 or 3, H, W)")
    if image.dtype == torch.uint8 and bits == 8:
        array = image.cpu().numpy()
    else:
        top, kind = (65535, np.uint16) if bits == 16 else (255, np.uint8)
        # One float copy, scaled and rounded in place: a 12 MP photo's write peaked 0.36 GiB
        # above the process's resident size with a copy per operation.
        array = image.detach().float().cpu().clamp(0, 1).mul_(top).round_().numpy().astype(kind)
    array = array.transpose(1, 2, 0)
    return array[:, :, 0] if array.shape[2] == 1 else array


def image_losses(path: str | Path, info: ImageInfo | None) -> list[str]:
    """What ``path``'s format cannot hold of what the input carried, in words (empty: nothing lost)."""
    if info is None:
        return []
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "")
    lost = sorted(info.carried() - _holds(fmt, info))
    return [f"{what} not kept: {fmt or Path(path).suffix} cannot hold it" for what in lost]


def _holds(fmt: str, info: ImageInfo) -> set[str]:
    """What ``fmt`` holds of ``info``: a 16-bit colour TIFF is OpenCV's, without ICC or EXIF."""
    holds = FORMAT_HOLDS.get(fmt, set())
    if fmt == "TIFF" and info.bits == 16 and info.colour:
        holds = holds - {"ICC profile", "EXIF"}
    return holds


def write_image(
    path: str | Path, image: torch.Tensor, *, protect: Iterable[str | Path] = (), info: ImageInfo | None = None
) -> Path:
    """Write ``(C, H, W)`` (float in ``[0, 1]``, or uint8); the format follows the suffix.
    With ``info`` (:func:`read_image_info` of the input) the output keeps what the format
    holds of it: the alpha channel, 16 bits per channel, the ICC profile and EXIF
    (orientation upright); :func:`image_losses` says what it cannot hold."""
    path = check_output(path, protect, image=True)
    fmt = Image.registered_extensions()[path.suffix.lower()]
    keep = info.carried() & _holds(fmt, info) if info is not None else set()
    if "alpha" in keep:
        image = torch.cat([image.detach().float().cpu(), info.alpha.float().cpu()])
    array = _quantize(image, 16 if "16 bits" in keep else 8)
    options = {}
    if "ICC profile" in keep:
        options["icc_profile"] = info.icc
    if "EXIF" in keep:
        options["exif"] = info.exif
    with atomic_path(path, protect) as tmp:
        try:
            if array.dtype == np.uint16 and array.ndim == 3:
                _write_sixteen_bit_colour(tmp, array, fmt, options)
            else:
                Image.fromarray(array).save(tmp, format=fmt, **options)
        except OSError as error:
            raise LRRError(f"{path}: cannot write ({error_summary(error)})") from None
    return path


def _write_sixteen_bit_colour(path: Path, array: np.ndarray, fmt: str, options: dict) -> None:
    """A uint16 ``(H, W, 3 or 4)`` array as a 16-bit PNG or TIFF (OpenCV), with the ICC
    profile and EXIF put into a PNG as its ``iCCP`` and ``eXIf`` chunks."""
    import cv2

    if array.shape[2] == 2:  # grey + alpha: as RGBA, which OpenCV writes
        array = np.concatenate([array[:, :, :1]] * 3 + [array[:, :, 1:]], axis=2)
    order = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, encoded = cv2.imencode(".png" if fmt == "PNG" else ".tiff", cv2.cvtColor(array, order))
    if not ok:
        raise OSError("OpenCV could not encode the image")
    data = encoded.tobytes()
    if fmt == "PNG":
        chunks = b""
        if "icc_profile" in options:
            chunks += _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(options["icc_profile"]))
        if "exif" in options:
            chunks += _png_chunk(b"eXIf", options["exif"].removeprefix(b"Exif\x00\x00"))
        end_of_header = 8 + 25  # the signature, then IHDR (length, type, 13 bytes, CRC)
        data = data[:end_of_header] + chunks + data[end_of_header:]
    Path(path).write_bytes(data)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
