"""What a user of the ``bm3d`` package runs to denoise one photo, as one whole process.

Run: ``python bench/peer_bm3d.py INPUT SIGMA OUTPUT``: INPUT an 8-bit grey or RGB image,
SIGMA the noise level in 0-255 units, OUTPUT a PNG file. Reads, denoises with
``bm3d.bm3d`` (grey) or ``bm3d.bm3d_rgb`` (colour, CBM3D) at their defaults, writes 8-bit
PNG. Timed against the whole ``python -m lrrtool denoise`` process (docs/denoising.md);
it imports only numpy, Pillow and bm3d, as such a script would. BM3D: benchmark only
(the package's licence is non-commercial).
"""

from __future__ import annotations

import sys
from pathlib import Path

import bm3d
import numpy as np
from PIL import Image


def main(source: Path, sigma: float, target: Path) -> None:
    image = np.asarray(Image.open(source)).astype(np.float64) / 255
    colour = image.ndim == 3
    clean = bm3d.bm3d_rgb(image[..., :3], sigma / 255) if colour else bm3d.bm3d(image, sigma / 255)
    Image.fromarray(np.clip(np.round(clean * 255), 0, 255).astype(np.uint8)).save(target)


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]))
