"""What a user of scikit-image's biharmonic inpainting runs, as one whole process.

Run: ``python bench/peer_biharmonic.py INPUT MASK OUTPUT``: INPUT an image file or a
folder of PNG frames, MASK an image (white = fill), OUTPUT a PNG file or a folder. Reads,
fills every image with ``skimage.restoration.inpaint_biharmonic`` (channels together),
writes 8-bit PNG. ``bench/inpaint.py --processes`` and ``bench/video.py`` time it against
the whole ``python -m lrrtool inpaint`` process; it imports only numpy, Pillow and
scikit-image, as such a script would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.restoration import inpaint_biharmonic


def fill_file(source: Path, mask: np.ndarray, target: Path) -> None:
    image = np.asarray(Image.open(source).convert("RGB"))
    filled = inpaint_biharmonic(image, mask, channel_axis=-1)
    Image.fromarray(np.clip(np.round(filled * 255), 0, 255).astype(np.uint8)).save(target)


def main(source: Path, mask_path: Path, target: Path) -> None:
    mask = np.asarray(Image.open(mask_path).convert("L")) > 127
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.glob("*.png")):
            fill_file(path, mask, target / path.name)
    else:
        fill_file(source, mask, target)


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:4]))
