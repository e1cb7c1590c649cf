"""Inpainting quality and time: lrrtool against biharmonic and OpenCV, in one run.

Run: ``python bench/inpaint.py [--device cpu|cuda] [--images 1-9] [--variants] [--photos] [--presets]
[--threads N] [--processes]``.

- TNNR benchmark (``../shared/data/tnnr-benchmark``, images 1-9, 300x300 RGB): random
  20 % / 50 % drop (seeded per image), the ``square``, ``square_small`` and ``text`` masks.
  Whole-image and missing-pixel PSNR, mean over the images, next to the EDLRR paper's
  best Table 1 row (whole-image PSNR; the paper does not say which it averaged).
- ``--photos``: scikit-image's bundled photos with random 30 % / 60 % drop, the text
  mask resized, and seeded scribbles; missing-pixel PSNR.
- ``--variants``: also other ``--reg`` choices, the Adam solver and the global model.
- ``--presets``: also lrrtool's ``fast`` and ``best`` presets; with ``--photos`` a table
  of each preset against the better of biharmonic and OpenCV NS (missing-pixel PSNR
  margin) and biharmonic's time (ratio): issue #15's goal is a ratio <= 5 at a margin of
  >= +0.5 dB on drops and >= +0.2 dB on scribbles.
- ``--threads N`` (default 0, every core: lrrtool's default): lrrtool's workers, each with one torch
  thread, and a 2 GiB budget (``--memory-gib``'s default).
- ``--processes``: instead of the above, the ``--photos`` cases as a user runs them: the
  whole ``python -m lrrtool inpaint`` process against ``bench/peer_biharmonic.py`` (a
  script that reads the PNG, fills it by biharmonic and writes it) on the same files.
- ``--dlrl``: instead of the above, ``--method dlrl`` (the DLRL paper's network) on 40 %
  random drop and the text mask, with the default and biharmonic, next to the DLRL
  paper's Table II row (missing-pixel PSNR, on its own six images: 23.68-29.79 dB).
- Always: the time of the default settings on a 512x512 RGB photo, with 50 % drop and
  with a 128x128 block (the block adds the start's held-out test).
- ``--figure``: writes ``bench/figures/inpaint-samples.png`` (rows: the bundled photo with
  its text mask, the facade with its block mask; columns: input with the missing pixels
  white, lrrtool, biharmonic, original) and prints the PSNRs; the README shows it.

Needs scikit-image and opencv-python-headless (benchmark only, not dependencies).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data
from skimage.restoration import inpaint_biharmonic

from lrrtool import workers
from lrrtool.media import read_image, read_mask, write_image
from lrrtool.metrics import psnr
from lrrtool.tasks.inpaint import InpaintSettings, inpaint

ROOT = Path(__file__).resolve().parents[1]
TNNR = ROOT.parent / "shared" / "data" / "tnnr-benchmark"
PAPER_BEST = {"drop20": 38.47, "drop50": 32.51, "square": 31.14, "square_small": 31.14, "text": 37.19}

Method = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lrrtool_method(device: str, **settings) -> Method:
    def run(image: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        out, _ = inpaint(image.to(device), fill.to(device), InpaintSettings(**settings), memory_gib=2.0)
        return out.cpu()

    return run


def biharmonic(image: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    out = inpaint_biharmonic(image.numpy().transpose(1, 2, 0), fill.numpy(), channel_axis=-1)
    return torch.from_numpy(out.transpose(2, 0, 1)).float()


def opencv(flag: int) -> Method:
    def run(image: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        pixels = (image.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
        out = cv2.inpaint(np.ascontiguousarray(pixels), fill.numpy().astype(np.uint8), 3, flag)
        out = out.reshape(pixels.shape)
        return torch.from_numpy(out.transpose(2, 0, 1).astype(np.float32) / 255)

    return run


def random_fill(shape: tuple[int, int], fraction: float, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < fraction


def scribbles(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """Seeded random polylines, 3-7 px wide: about 10 % of the pixels."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros(shape, np.uint8)
    while canvas.mean() < 0.1 * 255:
        points = (rng.random((6, 2)) * [shape[1], shape[0]]).astype(np.int32)
        cv2.polylines(canvas, [points], False, 255, int(rng.integers(3, 8)))
    return torch.from_numpy(canvas > 0)


def evaluate(methods: dict[str, Method], cases: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]) -> dict:
    """``{case: {method: (whole PSNR, missing PSNR, seconds per image)}}``, means over images."""
    table: dict = {}
    for case, items in cases.items():
        table[case] = {}
        for name, method in methods.items():
            whole, missing, seconds = [], [], 0.0
            for image, fill in items:
                observed = image.masked_fill(fill, 0)
                start = time.perf_counter()
                out = method(observed, fill).clamp(0, 1)
                seconds += time.perf_counter() - start
                whole.append(psnr(out, image))
                missing.append(psnr(out, image, fill))
            table[case][name] = (float(np.mean(whole)), float(np.mean(missing)), seconds / len(items))
            print(f"  {case:13s} {name:26s} whole {np.mean(whole):6.2f}  missing {np.mean(missing):6.2f}", flush=True)
    return table


def print_table(title: str, table: dict, paper: bool) -> None:
    print(f"\n## {title}\n")
    head = "| case | method | whole PSNR | missing PSNR | s / image |" + (" paper best (whole) |" if paper else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for case, rows in table.items():
        best = max(rows.values(), key=lambda r: r[1])[1]
        for name, (whole, missing, seconds) in rows.items():
            mark = " **" if math.isclose(missing, best) else ""
            line = f"| {case} | {name} | {whole:.2f} | {missing:.2f}{mark} | {seconds:.2f} |"
            if paper:
                line += f" {PAPER_BEST.get(case, float('nan')):.2f} |"
            print(line)


def goal_table(table: dict) -> None:
    """Each lrrtool row against the better of biharmonic and OpenCV NS (missing-pixel PSNR)
    and against biharmonic's time."""
    ours = [name for name in next(iter(table.values())) if name.startswith("lrrtool")]
    print("\n## lrrtool against the best peer: missing-PSNR margin (dB) / time ratio to biharmonic\n")
    print("| case | " + " | ".join(ours) + " |")
    print("|---|" + "---|" * len(ours))
    for case, rows in table.items():
        peer = max(rows["skimage biharmonic"][1], rows["cv2 NS"][1])
        cells = [f"{rows[m][1] - peer:+.2f} / {rows[m][2] / rows['skimage biharmonic'][2]:.0f}" for m in ours]
        print(f"| {case} | " + " | ".join(cells) + " |")


def process_table(cases: dict, threads: int) -> None:
    """Each case as a user runs it: ``python -m lrrtool inpaint IMAGE --mask MASK`` (its
    defaults; ``--threads`` when given) against ``bench/peer_biharmonic.py`` on the same
    PNG files, both timed as whole processes; missing-pixel PSNR of the written files."""
    import subprocess
    import sys
    import tempfile

    print("\n## Whole processes: lrrtool against a scikit-image biharmonic script on the same PNG files\n")
    print("Seconds per image (mean), Python's start, imports, reading and writing included; missing-pixel PSNR")
    print("of the 8-bit files written.\n")
    print("| case | lrrtool s | biharmonic s | ratio | lrrtool dB | biharmonic dB |")
    print("|---|---|---|---|---|---|")
    peer = Path(__file__).with_name("peer_biharmonic.py")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for case, items in cases.items():
            seconds, scores = {"lrrtool": 0.0, "biharmonic": 0.0}, {"lrrtool": [], "biharmonic": []}
            for k, (image, fill) in enumerate(items):
                source, mask = work / f"{case}-{k}.png", work / f"{case}-{k}-mask.png"
                write_image(source, image)
                write_image(mask, fill.float()[None])
                commands = {
                    "lrrtool": [sys.executable, "-m", "lrrtool", "inpaint", str(source), "--mask", str(mask), "-q"]
                    + (["--threads", str(threads)] if threads else []) + ["-o"],
                    "biharmonic": [sys.executable, str(peer), str(source), str(mask)],
                }  # fmt: skip
                for name, command in commands.items():
                    target = work / f"{case}-{k}-{name}.png"
                    started = time.perf_counter()
                    subprocess.run([*command, str(target)], check=True, cwd=ROOT)
                    seconds[name] += time.perf_counter() - started
                    scores[name].append(psnr(read_image(target), read_image(source), fill))
            n = len(items)
            print(
                f"| {case} | {seconds['lrrtool'] / n:.2f} | {seconds['biharmonic'] / n:.2f} | "
                f"{seconds['lrrtool'] / seconds['biharmonic']:.1f} | {np.mean(scores['lrrtool']):.2f} | "
                f"{np.mean(scores['biharmonic']):.2f} |",
                flush=True,
            )


def tnnr_cases(images: list[int]) -> dict:
    loaded = [read_image(TNNR / "images" / f"{i}.jpg") for i in images]
    cases: dict = {
        "drop20": [(im, random_fill(im.shape[1:], 0.2, i)) for i, im in zip(images, loaded, strict=True)],
        "drop50": [(im, random_fill(im.shape[1:], 0.5, i)) for i, im in zip(images, loaded, strict=True)],
    }
    for mask in ("square", "square_small", "text"):
        cases[mask] = [(im, read_mask(TNNR / "masks" / f"{mask}.png", im.shape[1:], invert=True)) for im in loaded]
    return cases


def photo_cases() -> dict:
    photos = {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "camera": np.stack([data.camera()] * 3, -1),
        "rocket": data.rocket(),
    }
    loaded = [torch.from_numpy(p[:512, :512].transpose(2, 0, 1).astype(np.float32) / 255) for p in photos.values()]
    text = TNNR / "masks" / "text.png"
    return {
        "drop30": [(im, random_fill(im.shape[1:], 0.3, k)) for k, im in enumerate(loaded)],
        "drop60": [(im, random_fill(im.shape[1:], 0.6, k)) for k, im in enumerate(loaded)],
        "text": [(im, read_mask(text, im.shape[1:], invert=True, resize=True)) for im in loaded],
        "scribbles": [(im, scribbles(tuple(im.shape[1:]), k)) for k, im in enumerate(loaded)],
    }


def figure(device: str) -> None:
    rows = []
    for name, mask in (("photo.jpg", "text-mask.png"), ("facade.jpg", "block-mask.png")):
        image = read_image(ROOT / "samples" / name)
        fill = read_mask(ROOT / "samples" / mask, tuple(image.shape[1:]))
        observed = image.masked_fill(fill, 0)
        ours, theirs = lrrtool_method(device)(observed, fill), biharmonic(observed, fill).clamp(0, 1)
        print(
            f"figure {name}: missing-pixel PSNR lrrtool {psnr(ours, image, fill):.2f} dB, "
            f"biharmonic {psnr(theirs, image, fill):.2f} dB"
        )
        gap = torch.ones(3, image.shape[1], 4)
        rows.append(torch.cat([image.masked_fill(fill, 1), gap, ours, gap, theirs, gap, image], dim=2))
    width = max(r.shape[2] for r in rows)
    rows = [torch.nn.functional.pad(r, (0, width - r.shape[2]), value=1) for r in rows]
    target = ROOT / "bench" / "figures" / "inpaint-samples.png"
    target.parent.mkdir(exist_ok=True)
    write_image(target, torch.cat([rows[0], torch.ones(3, 4, width), rows[1]], dim=1))
    print(f"wrote {target}")


def dlrl_table(device: str, images: list[int]) -> None:
    """``--method dlrl`` against the default on the DLRL paper's two mask types."""
    loaded = [read_image(TNNR / "images" / f"{i}.jpg") for i in images]
    cases = {
        "drop40": [(im, random_fill(im.shape[1:], 0.4, i)) for i, im in zip(images, loaded, strict=True)],
        "text": [(im, read_mask(TNNR / "masks" / "text.png", im.shape[1:], invert=True)) for im in loaded],
    }
    methods = {
        "lrrtool (default)": lrrtool_method(device),
        "lrrtool --method dlrl": lrrtool_method(device, method="dlrl"),
        "skimage biharmonic": biharmonic,
    }
    print(f"# bench/inpaint.py --dlrl, device {device}, TNNR images {images}")
    print_table(f"DLRL on the TNNR benchmark, images {images}", evaluate(methods, cases), paper=False)
    print(
        "\nDLRL paper, Table II (missing-pixel PSNR, its images a-f): 29.79 23.68 29.57 29.09 (40 % drop), "
        "28.20 25.87 (text)"
    )


def parse_images(spec: str) -> list[int]:
    if "-" in spec:
        a, b = spec.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in spec.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", default="1-9")
    parser.add_argument("--variants", action="store_true")
    parser.add_argument("--photos", action="store_true")
    parser.add_argument("--figure", action="store_true")
    parser.add_argument("--dlrl", action="store_true")
    parser.add_argument("--presets", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--processes", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    workers.set_workers(args.threads or workers.cpu_count())
    if args.figure:
        figure(args.device)
        return
    if args.dlrl:
        dlrl_table(args.device, parse_images(args.images))
        return
    if args.processes:
        process_table(photo_cases(), args.threads)
        return
    methods: dict[str, Method] = {"lrrtool (default)": lrrtool_method(args.device)}
    if args.presets:
        methods["lrrtool --preset fast"] = lrrtool_method(args.device, preset="fast")
        methods["lrrtool --preset best"] = lrrtool_method(args.device, preset="best")
    if args.variants:
        methods["lrrtool --reg nuclear"] = lrrtool_method(args.device, reg="nuclear")
        methods["lrrtool --reg laplace g=0.2"] = lrrtool_method(args.device, reg="laplace", gamma=0.2)
        methods["lrrtool --solver adam"] = lrrtool_method(args.device, solver="adam", reg="laplace", gamma=0.5)
        methods["lrrtool --model global --solver adam"] = lrrtool_method(
            args.device, model="global", solver="adam", reg="nuclear"
        )
    methods["skimage biharmonic"] = biharmonic
    methods["cv2 NS"] = opencv(cv2.INPAINT_NS)
    methods["cv2 Telea"] = opencv(cv2.INPAINT_TELEA)

    print(f"# bench/inpaint.py, device {args.device}, workers {workers.workers()} (one torch thread each)")
    if TNNR.exists():
        images = parse_images(args.images)
        print(f"TNNR images {images}")
        print_table(f"TNNR benchmark, images {args.images}", evaluate(methods, tnnr_cases(images)), paper=True)
    else:
        print(f"({TNNR} not found: TNNR table skipped)")
    if args.photos:
        photos = evaluate(methods, photo_cases())
        print_table("scikit-image photos (512x512 crops)", photos, paper=False)
        goal_table(photos)

    photo = torch.from_numpy(data.astronaut().transpose(2, 0, 1).astype(np.float32) / 255)
    block = torch.zeros(photo.shape[1:], dtype=torch.bool)
    block[192:320, 192:320] = True  # a 128 px hole: the start's held-out test runs
    lrrtool_method(args.device)(photo[:, :64, :64], random_fill((64, 64), 0.5, 0))  # warm-up
    print()
    for preset in ("fast", "default", "best") if args.presets else ("default",):
        for label, fill in (("50 % drop", random_fill(photo.shape[1:], 0.5, 0)), ("128x128 block", block)):
            start = time.perf_counter()
            _, result = inpaint(
                photo.masked_fill(fill, 0).to(args.device), fill.to(args.device), InpaintSettings(preset=preset),
                memory_gib=2.0,
            )
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            phases = result.details["phase_seconds"]
            print(
                f"speed: 512x512 RGB, {label}, preset {preset}: {seconds:.1f} s on {args.device} "
                f"(start {phases['start']:.1f} s: {result.details['start']}; fill {phases['refine']:.1f} s)"
            )


if __name__ == "__main__":
    main()
