"""Video denoising and inpainting: ``lrrtool denoise|inpaint CLIP`` against per-frame peers, in one run.

Run: ``python bench/video.py [--frames 20] [--only denoise|inpaint] [--threads 2] [--clips vtest-tilt]``.

Clips with known truth, made from OpenCV's sample clips in ``../shared/data/videos/``:
``tree`` (tree.avi, 320x240 colour, still camera, a hand moving), ``vtest`` (vtest.avi,
a 320x240 crop, still camera, pedestrians) and ``vtest-pan`` (the same scene seen by a
camera moving 2 pixels a frame to the right: a 320x240 window sliding over the frames);
``vtest-tilt`` (inpainting only: a camera moving 2 pixels a frame down, so the scene
under the caption box, 24 rows high, scrolls through it and other frames show most of
it; under the pan the box's 240 columns hide the same rows in every frame).

- Denoising: seeded Gaussian noise of ``sigma`` added to the 8-bit frames, clipped and
  rounded to 8 bits (every method gets the same noisy frames). lrrtool: the whole process
  ``python -m lrrtool denoise FRAMES/ --sigma S`` (a folder of PNG frames in and out,
  lossless; lrrtool's defaults, every core). Peers, timed in this process on the same
  frames: BM3D per frame (``bm3d.bm3d``; CBM3D ``bm3d.bm3d_rgb`` for colour) and BM4D on
  the clip as one volume (``bm4d.bm4d``; grey only: its colour mode measured 1.3 dB below
  CBM3D at 3x its time). PSNR over the whole clip.
- Inpainting: a caption box and a logo drawn over every frame (the same mask for every
  frame). lrrtool: ``python -m lrrtool inpaint FRAMES/ --mask MASK``. Peers per frame:
  OpenCV Navier-Stokes and Telea (radius 3) and scikit-image's biharmonic, timed in this
  process on frames in memory; biharmonic also as a whole process that reads the folder
  of frames and writes the filled frames as lrrtool does (``bench/peer_biharmonic.py``:
  what a user of scikit-image runs, Python's start and imports included). PSNR over the
  hidden pixels; flicker: the mean over hidden pixels and frame pairs of
  ``|(out[t+1] - out[t]) - (truth[t+1] - truth[t])|`` (0-255 units; a fill that moves as
  the scene does scores 0).

Needs bm3d, bm4d, opencv-python-headless, scikit-image (benchmark only; bm3d and bm4d have
non-commercial licences).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
SIZE = (240, 320)  # rows, columns of every clip
PAN = 2  # pixels a frame, vtest-pan


def read_frames(path: Path, count: int, start: int = 0) -> np.ndarray:
    """``count`` RGB frames (uint8 ``(T, H, W, 3)``) from ``start``."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="ffmpeg", output_params=["-fps_mode", "passthrough"])
    frames = [f for k, f in zip(range(start + count), reader, strict=False) if k >= start]
    reader.close()
    return np.stack(frames)


def clip(name: str, count: int) -> np.ndarray:
    """The clip ``name`` (see the module), uint8 ``(T, 240, 320, 3)``."""
    h, w = SIZE
    if name == "tree":
        return read_frames(VIDEOS / "tree.avi", count)[:, :h, :w]
    frames = read_frames(VIDEOS / "vtest.avi", count, start=100)
    if name == "vtest":
        return frames[:, 200 : 200 + h, 200 : 200 + w]
    if name == "vtest-tilt":
        return np.stack([f[100 + PAN * t : 100 + PAN * t + h, 200 : 200 + w] for t, f in enumerate(frames)])
    return np.stack([f[200 : 200 + h, 100 + PAN * t : 100 + PAN * t + w] for t, f in enumerate(frames)])


def grey(frames: np.ndarray) -> np.ndarray:
    """Luminance (BT.601), uint8 ``(T, H, W)``."""
    return np.round(frames.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def write_folder(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{k:04d}.png")


def read_folder(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def run_lrrtool(arguments: list[str], threads: int | None) -> float:
    """Seconds of one whole ``python -m lrrtool`` process (default threads unless given)."""
    command = [sys.executable, "-m", "lrrtool", *arguments, "-q"]
    if threads:
        command += ["--threads", str(threads)]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - started


def denoise_rows(names: list[str], count: int, threads: int | None, work: Path) -> None:
    import bm3d
    import bm4d

    print("\n## Video denoising (PSNR over the clip, dB; seconds for the whole clip)\n")
    print("| clip | kind | sigma | frames | noisy | BM3D/frame | s | BM4D | s | lrrtool | s | gain vs best |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, kind, sigma in names:
        truth = clip(name, count)
        truth = grey(truth) if kind == "grey" else truth
        noisy = np.clip(np.round(truth + rng.normal(0, sigma, truth.shape)), 0, 255).astype(np.uint8)
        folder = work / f"{name}-{kind}-{sigma}"
        write_folder(folder, noisy)
        seconds = run_lrrtool(["denoise", str(folder), "--sigma", str(sigma)], threads)
        ours = psnr(read_folder(work / f"{folder.name}.denoised"), truth)
        started = time.perf_counter()
        unit = noisy.astype(np.float64) / 255
        if kind == "grey":
            per_frame = np.stack([bm3d.bm3d(f, sigma / 255) for f in unit])
        else:
            per_frame = np.stack([bm3d.bm3d_rgb(f, sigma / 255) for f in unit])
        bm3d_seconds = time.perf_counter() - started
        bm3d_psnr = psnr(np.clip(per_frame * 255, 0, 255), truth)
        bm4d_psnr = bm4d_seconds = None
        if kind == "grey":
            started = time.perf_counter()
            volume = bm4d.bm4d(np.transpose(unit, (1, 2, 0)), sigma / 255)
            bm4d_seconds = time.perf_counter() - started
            bm4d_psnr = psnr(np.clip(np.transpose(volume, (2, 0, 1)) * 255, 0, 255), truth)
        best = max(p for p in (bm3d_psnr, bm4d_psnr) if p is not None)
        fmt = lambda x, f: "-" if x is None else f.format(x)  # noqa: E731
        print(
            f"| {name} | {kind} | {sigma} | {count} | {psnr(noisy, truth):.2f} | {bm3d_psnr:.2f} | {bm3d_seconds:.1f} "
            f"| {fmt(bm4d_psnr, '{:.2f}')} | {fmt(bm4d_seconds, '{:.1f}')} | {ours:.2f} | {seconds:.1f} "
            f"| {ours - best:+.2f} |",
            flush=True,
        )


def peer_process_seconds(folder: Path, mask_path: Path, out: Path) -> float:
    """Seconds of one whole process filling the folder by biharmonic (``peer_biharmonic.py``)."""
    script = Path(__file__).with_name("peer_biharmonic.py")
    command = [sys.executable, str(script), str(folder), str(mask_path), str(out)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def caption_mask() -> np.ndarray:
    """A caption box across the bottom and a logo in the top right corner: bool ``(240, 320)``."""
    h, w = SIZE
    mask = np.zeros(SIZE, dtype=bool)
    mask[h - 44 : h - 20, w // 8 : w - w // 8] = True
    mask[12:40, w - 60 : w - 16] = True
    return mask


def flicker(out: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    change = np.diff(out.astype(np.float64), axis=0) - np.diff(truth.astype(np.float64), axis=0)
    return float(np.abs(change)[:, mask].mean())


def inpaint_rows(names: list[str], count: int, threads: int | None, work: Path) -> None:
    import cv2
    from skimage.restoration import inpaint_biharmonic

    mask = caption_mask()
    mask_path = work / "caption.png"
    Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
    print(f"\n## Video inpainting (caption + logo, {mask.mean():.1%} of each frame; PSNR on the hidden pixels, dB;")
    print("flicker inside the mask, 0-255; seconds for the whole clip: biharmonic in this process on frames")
    print("in memory, and as a whole process that reads and writes the frames as lrrtool does)\n")
    print("| clip | frames | NS | Telea | biharmonic | s | s, process | lrrtool | s | x biharmonic process "
          "| gain vs best | flicker best peer | lrrtool |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        truth = clip(name, count)
        hidden = truth.copy()
        hidden[:, mask] = 255  # what the overlay shows
        folder = work / f"{name}-caption"
        write_folder(folder, hidden)
        seconds = run_lrrtool(["inpaint", str(folder), "--mask", str(mask_path)], threads)
        ours = read_folder(work / f"{folder.name}.inpainted")
        peers, times = {}, {}
        u8 = mask.astype(np.uint8) * 255
        for label, method in (("NS", cv2.INPAINT_NS), ("Telea", cv2.INPAINT_TELEA)):
            started = time.perf_counter()
            peers[label] = np.stack([cv2.inpaint(f, u8, 3, method) for f in hidden])
            times[label] = time.perf_counter() - started
        started = time.perf_counter()
        peers["biharmonic"] = np.stack(
            [np.clip(inpaint_biharmonic(f, mask, channel_axis=-1) * 255, 0, 255) for f in hidden]
        )
        times["biharmonic"] = time.perf_counter() - started
        process = peer_process_seconds(folder, mask_path, work / f"{name}-biharmonic")
        scores = {k: psnr(v[:, mask], truth[:, mask]) for k, v in peers.items()}
        ours_psnr = psnr(ours[:, mask], truth[:, mask])
        best_flicker = min(flicker(v, truth, mask) for v in peers.values())
        print(
            f"| {name} | {count} | {scores['NS']:.2f} | {scores['Telea']:.2f} | {scores['biharmonic']:.2f} "
            f"| {times['biharmonic']:.1f} | {process:.1f} | {ours_psnr:.2f} | {seconds:.1f} | {seconds / process:.1f} "
            f"| {ours_psnr - max(scores.values()):+.2f} "
            f"| {best_flicker:.2f} | {flicker(ours, truth, mask):.2f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--only", choices=("denoise", "inpaint"))
    parser.add_argument("--threads", type=int, default=None, help="lrrtool's --threads (default: its own)")
    parser.add_argument("--clips", nargs="+", help="inpainting: only these clips")
    args = parser.parse_args()
    import torch

    print(f"# bench/video.py --frames {args.frames}")
    print(f"cores {os.cpu_count()}; lrrtool: its default threads (every core) unless --threads "
          f"({args.threads}); torch {torch.__version__}; peers in this process, their own threading")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.only in (None, "denoise"):
            rows = [("tree", "colour", 25), ("vtest", "grey", 25), ("vtest-pan", "grey", 20)]
            denoise_rows([*rows, ("vtest-pan", "colour", 20)], args.frames, args.threads, work)
        if args.only in (None, "inpaint"):
            inpaint_rows(args.clips or ["vtest", "vtest-pan", "tree", "vtest-tilt"], args.frames, args.threads, work)


if __name__ == "__main__":
    main()
