"""Video separation: lrrtool against inexact-ALM robust PCA (pyrpca), in one run.

Run: ``python bench/separate.py [--frames 200] [--skip-pyrpca] [--memory] [--device cpu|cuda]``.

1. Real clip ``../shared/data/videos/vtest.avi``, first ``--frames`` frames at
   ``--scale 0.25`` (192x144), grey and colour: end-to-end seconds of
   :func:`lrrtool.app.separate_video`, what ``lrrtool separate`` runs (decode, solve,
   encode three videos), against
   ``pyrpca.rpca_pcp_ialm`` on the same grey matrix (compute alone, lambda =
   1/sqrt(max(D, T))). Writes ``bench/figures/separate-vtest.png``: rows are frames
   0, T/2 and T-1; columns the frame, lrrtool's background and mask, pyrpca's background.
2. Planted truth: a real still background (the bundled facade, 160x120 grey) with
   global flicker (3 %) and noise (sigma 2/255), three real image patches moving across
   it, 100 frames, masks known. F-measure of lrrtool's mask (its own rule), of pyrpca's
   |S| at its best threshold (a sweep against the truth) and with lrrtool's rule;
   background PSNR of both.
3. ``--memory``: a synthetic 1920x1080 clip (``--memory-frames``, default 60) through
   :func:`lrrtool.app.separate_video` at full size, in a child process; its peak
   resident memory.

Needs pyrpca (benchmark only, not a dependency).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lrrtool.app import separate_video
from lrrtool.media import read_image, read_video_chunks, write_image
from lrrtool.metrics import psnr
from lrrtool.tasks.separate import SeparateSettings, foreground_mask, separate

ROOT = Path(__file__).resolve().parents[1]
VTEST = ROOT.parent / "shared" / "data" / "videos" / "vtest.avi"


DEVICE = "cpu"  # --device


def run_separate(video: Path, folder: Path, device: str | None = None, **options: object) -> float:
    """Seconds of one end-to-end :func:`lrrtool.app.separate_video` run with default settings
    (``device`` None: ``--device``; a spawned child passes it, its module global is fresh)."""
    start = time.perf_counter()
    separate_video(video, folder, SeparateSettings(), device=device or DEVICE, **options)
    return time.perf_counter() - start


def ialm(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """pyrpca's inexact ALM on ``(T, C, H, W)``: background, sparse part, seconds."""
    from pyrpca import rpca_pcp_ialm

    V = frames.reshape(frames.shape[0], -1).T.double().numpy()
    start = time.perf_counter()
    low, sparse = rpca_pcp_ialm(V, 1 / np.sqrt(max(V.shape)), verbose=False)
    seconds = time.perf_counter() - start
    to_frames = lambda a: torch.from_numpy(np.ascontiguousarray(a.T)).float().reshape(frames.shape)  # noqa: E731
    return to_frames(low), to_frames(sparse), seconds


def f_measure(mask: torch.Tensor, truth: torch.Tensor) -> float:
    tp = float((mask & truth).sum())
    precision, recall = tp / max(float(mask.sum()), 1), tp / max(float(truth.sum()), 1)
    return 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)


def real_clip(frames_wanted: int, skip_pyrpca: bool) -> None:
    print(f"\n## Real clip: vtest.avi, first {frames_wanted} frames, --scale 0.25\n")
    print("| run | seconds | note |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for grey in (True, False):
            out = Path(tmp) / ("grey" if grey else "colour")
            seconds = run_separate(VTEST, out, max_frames=frames_wanted, scale=0.25, grey=grey)
            what = "grey" if grey else "colour"
            print(f"| lrrtool separate ({what}) | {seconds:.1f} | end to end: decode, solve, encode 3 videos |")
        frames = next(read_video_chunks(VTEST, chunk_frames=frames_wanted, max_frames=frames_wanted, scale=0.25))[0]
        grey_frames = frames.mean(dim=1, keepdim=True)
        start = time.perf_counter()
        ours, _, ours_mask, _ = separate(grey_frames.to(DEVICE))
        ours, ours_mask = ours.cpu(), ours_mask.cpu()
        seconds = time.perf_counter() - start
        print(f"| lrrtool solve alone (grey) | {seconds:.1f} | `separate()` on the decoded frames |")
        theirs = None
        if not skip_pyrpca:
            theirs, _, seconds = ialm(grey_frames)
            print(f"| pyrpca rpca_pcp_ialm (grey) | {seconds:.1f} | compute alone |")
    T = frames.shape[0]
    rows = []
    for t in (0, T // 2, T - 1):
        row = [frames[t], ours[t].expand(3, -1, -1), ours_mask[t][None].float().expand(3, -1, -1)]
        if theirs is not None:
            row.append(theirs[t].clamp(0, 1).expand(3, -1, -1))
        gap = torch.ones(3, frames.shape[2], 4)
        rows.append(torch.cat([x for item in row for x in (item, gap)][:-1], dim=2))
    target = ROOT / "bench" / "figures" / "separate-vtest.png"
    target.parent.mkdir(exist_ok=True)
    write_image(target, torch.cat([x for r in rows for x in (r, torch.ones(3, 4, r.shape[2]))][:-1], dim=1))
    print(f"\nmontage: {target.relative_to(ROOT)} (frame | lrrtool background | lrrtool mask | pyrpca background)")


def planted(skip_pyrpca: bool) -> None:
    g = torch.Generator().manual_seed(0)
    T, H, W = 100, 120, 160
    background = F.interpolate(read_image(ROOT / "samples" / "facade.jpg").mean(0)[None, None], (H, W), mode="area")
    background = background[0]  # (1, H, W)
    source = read_image(ROOT / "samples" / "photo.jpg")
    patches = [source[:, 40:60, 200:220], source[:, 150:166, 60:84], source[:, 220:244, 120:138]]
    frames = background.expand(T, 1, H, W).clone()
    frames = frames * (1 + 0.03 * torch.sin(torch.arange(T) / 7.0)).view(T, 1, 1, 1)
    truth = torch.zeros(T, H, W, dtype=torch.bool)
    for k, patch in enumerate(patches):
        ph, pw = patch.shape[1:]
        for t in range(T):
            y = int((20 + 30 * k + 0.3 * t * (k + 1)) % (H - ph))
            x = int((t * (1.5 + k) + 40 * k) % (W - pw))
            frames[t, 0, y : y + ph, x : x + pw] = patch.mean(0)
            truth[t, y : y + ph, x : x + pw] = True
    frames = (frames + 2 / 255 * torch.randn(frames.shape, generator=g)).clamp(0, 1)
    clean = background * (1 + 0.03 * torch.sin(torch.arange(T) / 7.0)).view(T, 1, 1, 1)

    print("\n## Planted truth: facade background, flicker 3 %, noise 2/255, 3 moving real patches, 100 frames\n")
    print("| method | F-measure | background PSNR (dB) | seconds |")
    print("|---|---|---|---|")
    start = time.perf_counter()
    bg, _, mask, _ = separate(frames.to(DEVICE))
    bg, mask = bg.cpu(), mask.cpu()
    seconds = time.perf_counter() - start
    score = f_measure(mask, truth)
    print(f"| lrrtool (default, its own mask rule) | {score:.4f} | {psnr(bg, clean):.2f} | {seconds:.1f} |")
    if skip_pyrpca:
        return
    low, sparse, seconds = ialm(frames)
    magnitude = sparse.abs().amax(dim=1)
    best = max((f_measure(magnitude > th, truth), th) for th in np.linspace(0.002, 0.3, 150))
    print(
        f"| pyrpca IALM, best threshold {best[1]:.3f} | {best[0]:.4f} | "
        f"{psnr(low.clamp(0, 1), clean):.2f} | {seconds:.1f} |"
    )
    same_rule = f_measure(foreground_mask(sparse), truth)
    print(
        f"| pyrpca IALM, lrrtool's mask rule | {same_rule:.4f} | {psnr(low.clamp(0, 1), clean):.2f} | {seconds:.1f} |"
    )


def memory(frames: int) -> None:
    import imageio.v2 as imageio

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "hd.mp4"
        y, x = np.mgrid[0:1080, 0:1920]
        base = ((np.sin(x / 90.0) + np.cos(y / 70.0)) * 60 + 128).astype(np.uint8)
        with imageio.get_writer(clip, fps=25, codec="libx264", quality=8, macro_block_size=1) as writer:
            for t in range(frames):
                frame = np.repeat(base[:, :, None], 3, axis=2).copy()
                frame[400:520, (t * 25) % 1800 : (t * 25) % 1800 + 120] = 255
                writer.append_data(frame)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            seconds = pool.apply(run_separate, (clip, Path(tmp) / "out"), {"device": DEVICE})
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"\n## Memory: {frames} frames of 1920x1080 RGB, default --memory-gib 2\n")
    print(f"peak resident memory of `separate_video` (child process): {peak:.2f} GiB, {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--skip-pyrpca", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--memory-frames", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    print(f"# bench/separate.py, device {DEVICE}, torch threads {torch.get_num_threads()}")
    if VTEST.exists():
        real_clip(args.frames, args.skip_pyrpca)
    else:
        print(f"({VTEST} not found: real-clip table skipped)")
    planted(args.skip_pyrpca)
    if args.memory:
        memory(args.memory_frames)


if __name__ == "__main__":
    main()
