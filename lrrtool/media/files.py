"""Files and folders: existing inputs, outputs checked before any work, atomic writes that
never replace a protected path (the inputs)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager, suppress
from glob import escape as glob_escape
from pathlib import Path

from PIL import Image

from lrrtool.errors import LRRError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
#: Video files the image commands take as clips (anything else ffmpeg reads works for ``separate``).
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".ogv"}


def is_clip(path: str | Path) -> bool:
    """Whether ``inpaint``/``denoise`` take ``path`` as a clip: a folder (of frames) or a video file."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES


def error_summary(error: BaseException) -> str:
    """A library error in one line: its first line and, for multi-line reports such as
    ffmpeg's stderr, the last line (where ffmpeg states the cause)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"
    return f"{error.__class__.__name__}: {text}"


def existing_file(path: str | Path, kind: str) -> Path:
    """``path`` as a Path, or an error when it is missing or a folder (``kind``: what was expected)."""
    path = Path(path)
    if not path.exists():
        raise LRRError(f"{path}: no such file")
    if path.is_dir():
        raise LRRError(f"{path}: is a folder, expected {kind}")
    return path


#: PIL modes of 16-bit (and 32-bit integer) grey images.


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when two paths name the same file (existing or not)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _reason(error: OSError) -> str:
    return error.strerror or error.__class__.__name__


def _missing_folders(folder: Path) -> tuple[list[Path], Path]:
    """The folders from ``folder`` up that do not exist yet (deepest first), and the
    nearest one that does."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing, folder


def writable_folder(folder: str | Path) -> Path:
    """Refuse, before any work, a folder that cannot be created or written: its nearest
    existing ancestor must be a folder this process may write to."""
    folder = Path(folder)
    existing = _missing_folders(folder)[1]
    if not existing.is_dir():
        raise LRRError(f"{folder}: cannot create it, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LRRError(f"{folder}: cannot write there (permission denied on {existing})")
    return folder


def check_output(path: str | Path, protect: Iterable[str | Path] = (), *, image: bool = False) -> Path:
    """Refuse, before any work, an output path that is one of the inputs, an existing
    folder, in a folder that cannot be written, or (``image``) of an unknown image format."""
    path = Path(path)
    for other in protect:
        if same_file(path, other):
            raise LRRError(f"{path}: refusing to overwrite an input; choose another output path")
    if path.is_dir():
        raise LRRError(f"{path}: is a folder; give a file name for the output")
    if image and Image.registered_extensions().get(path.suffix.lower()) is None:
        raise LRRError(f"{path}: unknown image format {path.suffix!r}; use .png, .jpg, .bmp or .tif")
    writable_folder(path.parent)
    return path


def make_folder(folder: str | Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the folders created (deepest
    last), for :func:`remove_empty` after a failure. A folder that another process makes
    meanwhile (a parallel task writing beside this one) is used, not counted as created."""
    missing = _missing_folders(Path(folder))[0]
    created: list[Path] = []
    try:
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise
                continue
            created.append(path)
    except OSError as error:
        remove_empty(created)
        raise LRRError(f"{missing[0]}: cannot create the folder ({_reason(error)})") from None
    return created


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove the given folders, deepest first, where they are empty."""
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        with suppress(OSError):
            folder.rmdir()


@contextmanager
def atomic_path(path: str | Path, protect: Iterable[str | Path] = ()):
    """Yield a temporary path in the target folder; on success it replaces ``path``.

    Missing folders are created only now, when there is something to put in them, and
    removed again if the write fails. OS errors become one-line ``LRRError``s."""
    path = check_output(path, protect)
    created = make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as error:
        remove_empty(created)
        raise LRRError(f"{path}: cannot write ({_reason(error)})") from None
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs follow the umask
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        remove_empty(created)
        raise LRRError(f"{path}: cannot write ({_reason(error)})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        remove_empty(created)
        raise


def remove_partial(path: str | Path) -> None:
    """Remove the temporary files :func:`atomic_path` left for ``path`` when its writer was
    killed (no ``finally`` ran there)."""
    path = Path(path)
    for leftover in path.parent.glob(f".{glob_escape(path.stem)}.*.tmp{glob_escape(path.suffix)}"):
        leftover.unlink(missing_ok=True)
