"""Sharing one block matching between steps (BM3D's trick): ``denoise`` with the groups
found every 2 steps (the default), 3 or 4, on three scikit-image photos, in one run.

Run: ``python bench/regroup.py [SIGMA]`` (default 25; log ``bench/results-regroup-cpu.txt``).
Full-size camera (grey), astronaut and coffee (colour), seeded Gaussian noise rounded to
8 bits, lrrtool's default workers (every core, one torch thread each) and 2 GiB budget;
PSNR against the clean photo and seconds of the solve in this process.
"""

from __future__ import annotations

import sys
import time

import torch
from skimage import data

from lrrtool.jobs.runtime import set_threads
from lrrtool.metrics import psnr
from lrrtool.tasks.denoise import DenoiseSettings, denoise


def main() -> None:
    set_threads(0, shared=True)
    sigma = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    print(f"# bench/regroup.py, sigma {sigma}, {torch.get_num_threads()} torch thread per worker")
    for name, array in (("astronaut", data.astronaut()), ("camera", data.camera()), ("coffee", data.coffee())):
        clean = torch.from_numpy(array).float().div(255)
        clean = clean.permute(2, 0, 1) if clean.ndim == 3 else clean[None]
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
        noisy = (clean + sigma / 255 * noise).mul(255).round().clamp(0, 255).div(255)
        for every in (2, 3, 4):
            started = time.perf_counter()
            out, _ = denoise(noisy, sigma / 255, DenoiseSettings(regroup_every=every), memory_gib=2.0)
            seconds = time.perf_counter() - started
            print(f"{name} sigma {sigma} regroup_every {every}: {psnr(out, clean):.3f} dB {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
