"""Photos at the sizes people have: whole-process time and peak memory of ``lrrtool
denoise`` and ``lrrtool inpaint`` on a 12-megapixel photo, against a 1-megapixel crop of
it and against the peers, in one run.

Run: ``python bench/scale_images.py [--only denoise|inpaint] [--size 4032x3024] [--threads N]``.

- The photo: scikit-image's astronaut, coffee, chelsea and rocket, each resized (bicubic)
  to a quarter of ``--size`` and tiled 2 x 2 (4032x3024 RGB by default: a phone photo's
  12 MP); the crop is its central 1000 x 1000 pixels.
- ``denoise``: Gaussian noise of sigma 15/255 (seeded, rounded to 8 bits), ``lrrtool
  denoise --sigma 15`` with default options on the photo and on the crop: wall seconds,
  seconds per megapixel, the process's peak resident memory (``VmHWM``, from the
  report), PSNR. The goal: the photo at <= 2.5 GiB and within 1.25x the crop's seconds per
  megapixel.
- ``inpaint``: thick seeded scribbles (polylines 9-21 px wide, about 4 % of the pixels),
  ``lrrtool inpaint`` with default options against scikit-image's ``inpaint_biharmonic``
  and OpenCV's Navier-Stokes and Telea (radius 3), each as a whole process that reads
  the PNGs and writes its result: wall seconds, peak memory (``ru_maxrss`` of the
  child), missing-pixel PSNR. The goal: <= 10x biharmonic's time, <= 2.5 GiB, and >= the
  best peer + 0.2 dB.
- ``--threads N`` (default 0): lrrtool's ``--threads`` (0: every core, its default); the
  peers run single-threaded as they are (scikit-image, OpenCV's inpaint).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

PEER = r"""
import sys, time
import numpy as np
from PIL import Image
image = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
mask = np.asarray(Image.open(sys.argv[3]).convert("L")) > 127
if sys.argv[1] == "biharmonic":
    from skimage.restoration import inpaint_biharmonic
    out = (inpaint_biharmonic(image, mask, channel_axis=-1) * 255).round().clip(0, 255).astype(np.uint8)
else:
    import cv2
    flag = cv2.INPAINT_NS if sys.argv[1] == "ns" else cv2.INPAINT_TELEA
    out = cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8), 3, flag)
Image.fromarray(out).save(sys.argv[4])
"""


def photo(width: int, height: int) -> np.ndarray:
    from skimage import data, transform

    quarter = (height // 2, width // 2)
    parts = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    tiles = [(transform.resize(p, quarter, order=3, anti_aliasing=False) * 255).clip(0, 255) for p in parts]
    return np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])]).round().astype(np.uint8)


def crop(image: np.ndarray, side: int = 1000) -> np.ndarray:
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side]


def thick_scribbles(shape: tuple[int, int], fraction: float, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    canvas = np.zeros(shape, np.uint8)
    while canvas.mean() < fraction * 255:
        points = (rng.random((4, 2)) * [shape[1], shape[0]]).astype(np.int32)
        cv2.polylines(canvas, [points], False, 255, int(rng.integers(9, 22)))
    return canvas > 0


def psnr(out: np.ndarray, clean: np.ndarray, where: np.ndarray | None = None) -> float:
    diff = out.astype(np.float64) - clean.astype(np.float64)
    error = (diff[where] if where is not None else diff).astype(np.float64) ** 2
    return float(10 * np.log10(255**2 / error.mean()))


def run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (GiB) of ``command``, by ``/usr/bin/time``: its
    child is forked from that small process, so the peak is the command's own (a child of
    this process would start from this process's size)."""
    done = subprocess.run(["/usr/bin/time", "-f", "%e %M", *command], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{command[:3]} failed: {done.stderr.strip()[-500:]}")
    seconds, peak = done.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(peak) / 2**20


def lrrtool(*args: object) -> tuple[float, dict]:
    """``lrrtool ARGS --report R -q`` as a fresh process: wall seconds and the report's entry."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        command = [sys.executable, "-m", "lrrtool", *map(str, args), "--report", str(report), "-q", "--overwrite"]
        seconds, _ = run(command)
        return seconds, json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("denoise", "inpaint"))
    parser.add_argument("--size", default="4032x3024")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    cores = len(os.sched_getaffinity(0))
    print(f"# bench/scale_images.py: {width}x{height}, {cores} cores, lrrtool --threads {args.threads}")
    clean = photo(width, height)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.only in (None, "denoise"):
            rng = np.random.default_rng(0)
            noisy = (clean + rng.normal(0, 15, clean.shape)).round().clip(0, 255).astype(np.uint8)
            print("\n## denoise --sigma 15, default options\n")
            print("| input | megapixels | seconds | s / MP | peak GiB | tile side (workers) | PSNR noisy | PSNR |")
            print("|---|---|---|---|---|---|---|---|")
            for name, image, truth in (("1 MP crop", crop(noisy), crop(clean)), ("12 MP photo", noisy, clean)):
                source, target = folder / "noisy.png", folder / "out.png"
                Image.fromarray(image).save(source)
                seconds, report = lrrtool("denoise", source, "--sigma", 15, "-o", target, "--threads", args.threads)
                entry = report["results"][0]
                out = np.asarray(Image.open(target))
                mp = image.shape[0] * image.shape[1] / 1e6
                print(f"| {name} | {mp:.2f} | {seconds:.1f} | {seconds / mp:.1f} | {entry['peak_memory_gib']:.2f} | "
                      f"{entry.get('tile') or 'whole'} ({report['threads']}) | {psnr(image, truth):.2f} | "
                      f"{psnr(out, truth):.2f} |", flush=True)  # fmt: skip
        if args.only in (None, "inpaint"):
            fill = thick_scribbles(clean.shape[:2], 0.04, seed=1)
            observed = clean.copy()
            observed[fill] = 255
            source, mask = folder / "observed.png", folder / "mask.png"
            Image.fromarray(observed).save(source)
            Image.fromarray((fill * 255).astype(np.uint8)).save(mask)
            print(f"\n## inpaint, thick scribbles ({100 * fill.mean():.1f} % missing), default options\n")
            print("| method | seconds | peak GiB | missing PSNR | time / biharmonic |")
            print("|---|---|---|---|---|")
            rows = {}
            for peer in ("biharmonic", "ns", "telea"):
                target = folder / f"{peer}.png"
                seconds, peak = run([sys.executable, "-c", PEER, peer, str(source), str(mask), str(target)])
                rows[peer] = (seconds, peak, psnr(np.asarray(Image.open(target)), clean, fill))
            target = folder / "lrrtool.png"
            seconds, report = lrrtool("inpaint", source, "--mask", mask, "-o", target, "--threads", args.threads)
            entry = report["results"][0]
            rows["lrrtool"] = (seconds, entry["peak_memory_gib"], psnr(np.asarray(Image.open(target)), clean, fill))
            for name, (seconds, peak, quality) in rows.items():
                ratio = seconds / rows["biharmonic"][0]
                print(f"| {name} | {seconds:.1f} | {peak:.2f} | {quality:.2f} | {ratio:.2f} |")
            best = max(v[2] for k, v in rows.items() if k != "lrrtool")
            regions = entry.get("start_regions", 1)
            print(f"\nlrrtool against the best peer: {rows['lrrtool'][2] - best:+.2f} dB; phases "
                  f"{entry.get('phase_seconds')}, start {entry.get('start')} ({regions} regions)")  # fmt: skip


if __name__ == "__main__":
    main()
