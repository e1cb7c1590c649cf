"""Scale-out with ``--ray``: wall time of a batch of images and of a long video, run
sequentially and as Ray tasks, in one run on this machine.

Run: ``python bench/scale.py [--images 32] [--frames 1200] [--size 640x360] [--segments 2]``.

- Batch: ``lrrtool denoise`` on ``--images`` 128x128 colour crops of scikit-image photos
  with Gaussian noise (sigma 25/255), sequentially with ``--threads 1`` and with every
  core (``--threads 0``), then with ``--ray --threads 1`` (a local instance, one task per
  core). Every run is a fresh ``lrrtool`` process, so Ray's start is in its time; the
  outputs are compared pixel by pixel with the sequential run's.
- Video: ``lrrtool separate`` on a planted ``--size`` colour clip of ``--frames`` frames
  (``bench/planted_video.py``), sequentially (``--threads 1`` and every core) and with
  ``--ray --threads 1 --segment-frames frames/segments`` and with the default segments
  (shared over the task slots, the first longer by a warm-up). F-measure against the truth,
  and the background's seam: the largest frame-to-frame jump of the background video at
  a segment border against the median jump, the largest over the fade after a border
  (``BLEND_FRAMES``), and the sequential run's at the same frames; and for the Ray run,
  the seconds the head spent joining the segments' lossless videos into the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planted_video import f_measure, write_clip

from lrrtool.video import BLEND_FRAMES


def lrrtool(*args: object) -> tuple[float, dict]:
    """``lrrtool ARGS --report R -q`` in a fresh process: wall seconds and the report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lrrtool", *map(str, args), "--report", str(report), "-q"], check=False)
        seconds = time.perf_counter() - started
        return seconds, json.loads(report.read_text()) if report.exists() else {}


def crops(count: int, folder: Path) -> list[Path]:
    from skimage import data

    rng = np.random.default_rng(0)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    paths = []
    for k in range(count):
        photo = photos[k % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - 128), rng.integers(0, photo.shape[1] - 128)
        noisy = photo[y : y + 128, x : x + 128].astype(np.float32) + rng.normal(0, 25, (128, 128, 3))
        paths.append(folder / f"crop{k:02d}.png")
        Image.fromarray(noisy.clip(0, 255).round().astype(np.uint8)).save(paths[-1])
    return paths


def batch(count: int, cores: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        crops(count, folder)
        print(f"\n## Batch: lrrtool denoise, {count} noisy 128x128 colour crops (sigma 25)\n")
        print("| run | seconds | images / s | speed-up | outputs against the first run |")
        print("|---|---|---|---|---|")
        first, first_dir = None, None
        for run, (label, flags) in enumerate(
            (
                ("sequential, --threads 1", ("--threads", 1)),
                (f"sequential, --threads 0 ({cores} threads)", ("--threads", 0)),
                (f"--ray --threads 1 (local instance, {cores} tasks at once)", ("--ray", "--threads", 1)),
            )
        ):
            out = folder / f"out{run}"
            seconds, report = lrrtool("denoise", folder / "crop*.png", "--sigma", 25, "--output-dir", out, *flags)
            done = sum("error" not in e for e in report.get("results", []))
            first = first or seconds
            same = "–"
            if first_dir is None:
                first_dir = out
            else:
                pixels = lambda p: np.asarray(Image.open(p), np.int16)  # noqa: E731
                diffs = [np.abs(pixels(p) - pixels(first_dir / p.name)).max() for p in sorted(out.glob("*.png"))]
                same = f"max difference {max(diffs)}/255 over {len(diffs)} images"
            print(f"| {label} | {seconds:.1f} | {done / seconds:.2f} | {first / seconds:.2f}x | {same} |")


def video(frames: int, size: tuple[int, int], segments: int, cores: int) -> None:
    width, height = size
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = write_clip(folder / "clip.mp4", width=width, height=height, frames=frames)
        length = -(-frames // segments)
        print(f"\n## Video: lrrtool separate, planted {width}x{height} colour clip, {frames} frames\n")
        print(
            "| run | segments (frames) | seconds | fps | speed-up | F-measure | background jump at the segment "
            f"borders, /255 (largest; median jump; largest in the {BLEND_FRAMES} frames after; the sequential "
            "run's there) | joining |"
        )
        print("|---|---|---|---|---|---|---|---|")
        runs = (
            ("sequential, --threads 1", ("--threads", 1)),
            (f"sequential, --threads 0 ({cores} threads)", ("--threads", 0)),
            (f"--ray --threads 1 --segment-frames {length}", ("--ray", "--threads", 1, "--segment-frames", length)),
            ("--ray --threads 1 (default segments)", ("--ray", "--threads", 1)),
        )
        first, sequential_jumps = None, None
        for run, (label, flags) in enumerate(runs):
            out = folder / f"out{run}"
            seconds, report = lrrtool("separate", clip.path, "--output-dir", out, *flags)
            first = first or seconds
            mask = read_frames(out / "mask.mp4")[..., 0] > 127
            jumps = frame_jumps(read_frames(out / "background.mp4"))
            sequential_jumps = jumps if sequential_jumps is None else sequential_jumps
            parts = report.get("segments", [])
            borders = [part["start"] - 1 for part in parts[1:]]
            seam = (
                f"{max(jumps[b] for b in borders):.3f}; {np.median(jumps):.3f}; "
                f"{max(jumps[b : b + BLEND_FRAMES + 1].max() for b in borders):.3f}; "
                f"{max(sequential_jumps[b] for b in borders):.3f}"
                if borders
                else f"–; {np.median(jumps):.3f}; –; –"
            )
            fps = report.get("frames", frames) / seconds
            joining = f"{report['join_seconds']:.1f} s" if "join_seconds" in report else "–"
            sizes = " + ".join(str(part["frames"]) for part in parts) or "–"
            print(
                f"| {label} | {sizes} | {seconds:.1f} | {fps:.1f} | {first / seconds:.2f}x | "
                f"{f_measure(mask, clip.truth):.4f} | {seam} | {joining} |"
            )


def read_frames(path: Path) -> np.ndarray:
    import imageio.v2 as imageio

    return np.stack([frame for frame in imageio.get_reader(path, format="ffmpeg")])


def frame_jumps(background: np.ndarray) -> np.ndarray:
    """Mean absolute difference (0-255) between each frame and the next: ``(T - 1,)``."""
    frames = background.astype(np.int16)
    return np.abs(frames[1:] - frames[:-1]).mean(axis=(1, 2, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--only", choices=["batch", "video"], action="append")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"# bench/scale.py: {cores} cores; sequential runs and Ray tasks as stated per row")
    sections = args.only or ["batch", "video"]
    if "batch" in sections:
        batch(args.images, cores)
    if "video" in sections:
        width, height = (int(v) for v in args.size.split("x"))
        video(args.frames, (width, height), args.segments, cores)


if __name__ == "__main__":
    main()
