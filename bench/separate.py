"""Video separation: lrrtool against inexact-ALM robust PCA (pyrpca), in one run.

Run: ``python bench/separate.py [--frames 200] [--skip-pyrpca] [--memory] [--device cpu|cuda]``.

1. Real clip ``../shared/data/videos/vtest.avi``, first ``--frames`` frames at
   ``--scale 0.25`` (192x144), grey and colour: end-to-end seconds of
   :func:`lrrtool.jobs.videos.separate_video`, what ``lrrtool separate`` runs (decode, solve,
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
   :func:`lrrtool.jobs.videos.separate_video` at full size, in a child process; its peak
   resident memory.

Needs pyrpca (benchmark only, not a dependency).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lrrtool.jobs.runtime import peak_memory_gib
from lrrtool.jobs.videos import Clip, separate_video
from lrrtool.media import read_image, read_video_chunks, write_image
from lrrtool.metrics import psnr
from lrrtool.video import (
    SeparateSettings,
    blend_frames,
    foreground_mask,
    separate,
    separate_chunks,
    working_size,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # planted_video
VTEST = ROOT.parent / "shared" / "data" / "videos" / "vtest.avi"


DEVICE = "cpu"  # --device


def run_separate(video: Path, folder: Path, device: str | None = None, **options: object) -> float:
    """Seconds of one end-to-end :func:`lrrtool.jobs.videos.separate_video` run with default settings
    (``device`` None: ``--device``; a spawned child passes it, its module global is fresh)."""
    start = time.perf_counter()
    separate_video(video, folder, SeparateSettings(), device=device or DEVICE, clip=Clip(**options))
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
    runs = ((None, "lrrtool (default: solve, then robust per-pixel fit)"), (0, "lrrtool `--work-pixels 0`"))
    for pixels, label in runs:
        settings = SeparateSettings() if pixels is None else SeparateSettings(work_pixels=pixels)
        start = time.perf_counter()
        part = next(separate_chunks([frames.to(DEVICE)], settings))
        seconds = time.perf_counter() - start
        bg = part.background.cpu()
        bg = bg.float() / 255 if bg.dtype == torch.uint8 else bg
        score = f_measure(part.mask.cpu(), truth)
        print(f"| {label}, its own mask rule | {score:.4f} | {psnr(bg, clean):.2f} | {seconds:.1f} |")
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
            # The child's own peak (VmHWM): RUSAGE_CHILDREN's ru_maxrss would include this
            # process's size at the fork, which survives the exec.
            peak = pool.apply(peak_memory_gib, ("cpu",))
    print(f"\n## Memory: {frames} frames of 1920x1080 RGB, default --memory-gib 2\n")
    print(f"peak resident memory of `separate_video` (child process): {peak:.2f} GiB, {seconds:.0f} s")


# ------------------------------------------------------------------ full resolution (issue 16)

MOG2_THREADS = 2  # --threads: OpenCV and torch get the same count


def cli_separate(video: Path, folder: Path, *options: str) -> dict:
    """``lrrtool separate`` in a child process (its peak memory is its own); the report."""
    import json
    import subprocess
    import sys

    report = folder.with_suffix(".json")
    command = [sys.executable, "-m", "lrrtool", "separate", str(video), "--output-dir", str(folder)]
    command += ["--threads", str(MOG2_THREADS), "--device", DEVICE, "--overwrite", "-q", "--report", str(report)]
    subprocess.run([*command, *options], check=True)
    return json.loads(report.read_text())


def read_mask_video(path: Path) -> np.ndarray:
    import imageio.v2 as imageio

    return np.stack([frame[:, :, 0] > 127 for frame in imageio.get_reader(path, format="ffmpeg")])


def hd(frames: int, repeats: int) -> None:
    """Planted 1280x720 colour clips against OpenCV MOG2, end to end on the same file."""
    from planted_video import f_measure, mog2_mask_video, write_clip

    print(f"\n## Planted 1280x720 colour clip, {frames} frames: lrrtool against OpenCV MOG2\n")
    print(f"Both with {MOG2_THREADS} threads; seconds are the median of {repeats} alternating runs. F-measure on")
    print("frames 30+ (after MOG2's warm-up). MOG2: defaults (history 500, varThreshold 16, shadows detected;")
    print("shadow pixels (127) counted as background, as OpenCV documents them). lrrtool: default settings;")
    print("`--outputs mask` does MOG2's work (decode, subtract, encode the mask); the full run also encodes")
    print("background.mp4 and foreground.mp4. Peak memory: the lrrtool process's peak resident set.\n")
    print(
        "| clip | method | F-measure | F, MOG2 shadows as foreground | seconds | x MOG2 | peak GiB | background PSNR |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for dimming in (True, False):
            name = "dimming 18 % at frame 54" if dimming else "steady"
            clip = write_clip(Path(tmp) / f"clip{int(dimming)}.mp4", frames=frames, dimming=dimming)
            truth = clip.truth[30:]
            mog_times, runs = [], {"mask": [], "all": []}
            for _ in range(repeats):
                masks, seconds = mog2_mask_video(clip.path, Path(tmp) / "mog2.mp4", MOG2_THREADS)
                mog_times.append(seconds)
                for kind, options in (("mask", ("--outputs", "mask")), ("all", ())):
                    runs[kind].append(cli_separate(clip.path, Path(tmp) / f"out-{kind}", *options))
            mog = float(np.median(mog_times))
            mog_shadow = mog2_shadow_f(clip.path, truth)
            mog_score = f_measure(masks[30:], truth)
            print(f"| {name} | OpenCV MOG2 | {mog_score:.4f} | {mog_shadow:.4f} | {mog:.2f} | 1.0 | – | – |")
            ours = read_mask_video(Path(tmp) / "out-all" / "mask.mp4")
            score = f_measure(ours[30:], truth)
            background_psnr = hd_background_psnr(Path(tmp) / "out-all" / "background.mp4", clip)
            for kind, label in (("mask", "lrrtool `--outputs mask`"), ("all", "lrrtool, all three videos")):
                seconds = float(np.median([r["seconds"] for r in runs[kind]]))
                peak = max(r["peak_memory_gib"] for r in runs[kind])
                psnr_text = f"{background_psnr:.2f}" if kind == "all" else "–"
                print(
                    f"| {name} | {label} | {score:.4f} | – | {seconds:.2f} | {seconds / mog:.1f} | {peak:.2f} | "
                    f"{psnr_text} |"
                )


def mog2_shadow_f(video: Path, truth: np.ndarray) -> float:
    import cv2

    capture, subtractor, masks = cv2.VideoCapture(str(video)), cv2.createBackgroundSubtractorMOG2(), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        masks.append(subtractor.apply(frame) > 0)
    from planted_video import f_measure

    return f_measure(np.stack(masks)[30:], truth)


def hd_background_psnr(path: Path, clip) -> float:
    """PSNR of the written background video against the clean lit background, every 10th frame."""
    import imageio.v2 as imageio

    errors = []
    for t, frame in enumerate(imageio.get_reader(path, format="ffmpeg")):
        if t % 10 == 0:
            errors.append(float(np.mean((frame.astype(np.float32) / 255 - clip.background(t)) ** 2)))
    return float(10 * np.log10(1 / np.mean(errors)))


def lift_against_full() -> None:
    """The lift against the full-size solve on a clip small enough for both."""
    from planted_video import f_measure, write_clip

    print("\n## Solve small and lift against the full-size solve: planted 320x180 colour clip, 100 frames\n")
    print("| solve | working copy | F-measure (all frames) | background PSNR (dB) | seconds (solve + mask) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "small.mp4", width=320, height=180, frames=100)
        frames = next(read_video_chunks(clip.path, chunk_frames=100, raw=True))[0]
        clean = torch.from_numpy(np.stack([clip.background(t) for t in range(100)])).permute(0, 3, 1, 2)
        for pixels in (0, 320 * 180, 128 * 72, 64 * 36, 32 * 18):
            settings = SeparateSettings(work_pixels=pixels)
            start = time.perf_counter()
            part = next(separate_chunks([frames.to(DEVICE)], settings))
            seconds = time.perf_counter() - start
            background = part.background.cpu()
            background = background.float() / 255 if background.dtype == torch.uint8 else background
            h, w = working_size(180, 320, pixels)
            label = {0: "robust PCA alone (`--work-pixels 0`)", 320 * 180: "full size, then the per-pixel fit"}
            label = label.get(pixels, "small, lifted by the per-pixel fit")
            print(
                f"| {label} | {w}x{h} | {f_measure(part.mask.cpu().numpy(), clip.truth):.4f} | "
                f"{psnr(background, clean):.2f} | {seconds:.2f} |"
            )


def hd1080(frames: int) -> None:
    """fps and peak memory on a synthetic 1920x1080 clip, extrapolated to 10 minutes."""
    from planted_video import write_clip

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        clip = write_clip(Path(tmp) / "hd.mp4", width=1920, height=1080, frames=frames)
        made = time.perf_counter() - start
        report = cli_separate(clip.path, Path(tmp) / "out")
    fps, peak = report["fps"], report["peak_memory_gib"]
    minutes = 10 * 60 * 25 / fps / 60
    print(f"\n## 1920x1080 colour, {frames} frames (planted clip, 25 fps; writing it took {made:.0f} s)\n")
    print("| frames | seconds | fps | peak memory GiB | chunks | 10 minutes at 25 fps (15,000 frames) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {report['frames']} | {report['seconds']:.1f} | {fps:.2f} | {peak:.2f} | {len(report['chunks'])} | "
        f"about {minutes:.0f} minutes |"
    )


def real_clips(repeats: int) -> None:
    """Real clips at full resolution: montages with MOG2, and real patches planted into them."""
    import cv2
    import imageio.v2 as imageio

    # Montage rows: frames 0, T/2 and T-1, but tree.avi's hand is in frames 54-67 only.
    clips = [ROOT / "samples" / "pedestrians.mp4", VTEST, VTEST.parent / "tree.avi"]
    rows_of, shares = {"tree": (0, 56, 64)}, {}
    print("\n## Real clips at full resolution, with OpenCV MOG2\n")
    print("| clip | size | frames | lrrtool seconds | fps | MOG2 seconds | lrrtool mask, median % of frame |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for path in clips:
            if not path.exists():
                print(f"| {path.name} | not found | | | | | |")
                continue
            report = cli_separate(path, Path(tmp) / path.stem, "--max-frames", "300")
            ours = read_mask_video(Path(tmp) / path.stem / "mask.mp4")
            cv2.setNumThreads(MOG2_THREADS)
            # The frames lrrtool read: the file's own (ffmpeg's default rate repeats tree.avi's
            # 68 frames as 449), not OpenCV's own decoder's.
            reader = imageio.get_reader(path, format="ffmpeg", output_params=["-fps_mode", "passthrough"])
            frames = np.stack([frame for _, frame in zip(range(ours.shape[0]), reader, strict=False)])
            subtractor, theirs = cv2.createBackgroundSubtractorMOG2(), []
            start = time.perf_counter()
            for frame in frames:
                theirs.append(subtractor.apply(np.ascontiguousarray(frame[:, :, ::-1])) == 255)
            mog_seconds = time.perf_counter() - start
            size = f"{report['frame_size'][0]}x{report['frame_size'][1]}"
            cover = 100 * float(np.median(ours.reshape(ours.shape[0], -1).mean(1)))
            print(
                f"| {path.name} | {size} | {report['frames']} | {report['seconds']:.1f} | {report['fps']:.1f} | "
                f"{mog_seconds:.1f} (subtract only) | {cover:.1f} |"
            )
            T = ours.shape[0]
            rows = rows_of.get(path.stem, (0, T // 2, T - 1))
            montage(path.stem, frames, Path(tmp) / path.stem / "background.mp4", ours, np.stack(theirs), rows)
            if path.stem in rows_of:
                shares[path.name] = " ".join(f"{100 * float(ours[t].mean()):.1f}" for t in range(T))
    print("\nMontages: bench/figures/separate-real-*.png (rows: frames 0, T/2, T-1, and 0, 56, 64 for tree.avi;")
    print("columns: frame, lrrtool background, lrrtool mask, MOG2 mask).")
    for name, line in shares.items():
        print(f"\n{name}, lrrtool mask, % of each frame: {line}")
    planted_real(repeats)


def montage(
    name: str, frames: np.ndarray, background_video: Path, ours: np.ndarray, theirs: np.ndarray, rows_at: tuple
) -> None:
    import imageio.v2 as imageio

    background = np.stack([frame for frame in imageio.get_reader(background_video, format="ffmpeg")])
    rows = []
    for t in rows_at:
        as_rgb = lambda m: np.repeat(m[:, :, None].astype(np.uint8) * 255, 3, axis=2)  # noqa: E731
        row = [frames[t], background[t][: frames.shape[1], : frames.shape[2]], as_rgb(ours[t]), as_rgb(theirs[t])]
        gap = np.full((frames.shape[1], 6, 3), 255, np.uint8)
        rows.append(np.concatenate([x for item in row for x in (item, gap)][:-1], axis=1))
    gap = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    picture = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)
    target = ROOT / "bench" / "figures" / f"separate-real-{name}.png"
    write_image(target, torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1).float() / 255)


def planted_real(repeats: int) -> None:
    """Real image patches pasted, moving, into real clips. The truth is the patches; the
    people already in the clip are real foreground that no truth covers, so pixels that
    either method marks on the unmodified clip (grown by 5 px) are left out of the score
    (unless a patch covers them), for both methods alike."""
    import cv2
    import imageio.v2 as imageio
    import skimage.data as data
    from planted_video import f_measure

    print("\n## Real clips with planted truth: real patches pasted, moving, into the clip\n")
    print("Scored pixels: all but those either method marks on the unmodified clip (grown by 5 px), which are")
    print("the clip's own moving people. Area: the worst frame's mask (scored pixels) against 2x the truth + 1 %.\n")
    print("| clip | frames | method | F-measure | worst frame: mask % / (2 x truth + 1) % |")
    print("|---|---|---|---|---|")
    sources = [data.astronaut()[30:230, 150:330], data.chelsea()[60:240, 100:300], data.rocket()[60:300, 250:370]]
    with tempfile.TemporaryDirectory() as tmp:
        for path, frames_wanted in ((ROOT / "samples" / "pedestrians.mp4", 30), (VTEST, 200)):
            if not path.exists():
                continue
            reader = imageio.get_reader(path, format="ffmpeg", output_params=["-fps_mode", "passthrough"])
            original = np.stack([frame for _, frame in zip(range(frames_wanted), reader, strict=False)])
            T, H, W = original.shape[:3]
            truth = np.zeros((T, H, W), dtype=bool)
            video = original.copy()
            side = max(12, H // 6)
            for k, source in enumerate(sources):
                from PIL import Image

                patch = np.asarray(Image.fromarray(source).resize((side, side + 4 * k)))
                ph, pw = patch.shape[:2]
                for t in range(T):
                    y = int((H * 0.1 + k * H * 0.25 + t * (0.4 + 0.3 * k) * H / 144) % (H - ph))
                    x = int((W * 0.05 + k * W * 0.3 + t * (1.0 + 0.5 * k) * W / 192) % (W - pw))
                    video[t, y : y + ph, x : x + pw] = patch
                    truth[t, y : y + ph, x : x + pw] = True
            planted = Path(tmp) / f"{path.stem}-planted.avi"
            unmodified = Path(tmp) / f"{path.stem}-original.avi"
            for target, frames in ((planted, video), (unmodified, original)):
                with imageio.get_writer(target, format="ffmpeg", fps=10, codec="ffv1", pixelformat="bgr0") as w:
                    for frame in frames:
                        w.append_data(frame)
            results = {}
            for which, clip in (("planted", planted), ("original", unmodified)):
                cli_separate(clip, Path(tmp) / f"{path.stem}-{which}", "--outputs", "mask")
                ours = read_mask_video(Path(tmp) / f"{path.stem}-{which}" / "mask.mp4")
                cv2.setNumThreads(MOG2_THREADS)
                capture, subtractor, theirs = cv2.VideoCapture(str(clip)), cv2.createBackgroundSubtractorMOG2(), []
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    theirs.append(subtractor.apply(frame) == 255)
                results[which] = {"lrrtool": ours, "MOG2": np.stack(theirs)}
            grown = results["original"]["lrrtool"] | results["original"]["MOG2"]
            grown = torch.from_numpy(grown)[:, None].float()
            grown = (torch.nn.functional.max_pool2d(grown, 11, 1, 5)[:, 0] > 0).numpy()
            scored = ~grown | truth
            for method in ("lrrtool", "MOG2"):
                mask = results["planted"][method] & scored
                cover = mask.reshape(T, -1).mean(1)
                allowed = 2 * truth.reshape(T, -1).mean(1) + 0.01
                worst = int(np.argmax(cover - allowed))
                print(
                    f"| {path.name} | {T} | {method} | {f_measure(mask, truth & scored):.4f} | "
                    f"{100 * cover[worst]:.1f} / {100 * allowed[worst]:.1f} (frame {worst}) |"
                )


def stopped_foreground() -> None:
    """A foreground object that stops: how long it stays foreground, by chunk length."""
    import skimage.data as data
    from planted_video import _resize

    T, H, W = 300, 180, 320
    rng = np.random.default_rng(0)
    scene = _resize(data.coffee()[:337], W, H)
    patch = _resize(data.astronaut()[30:230, 150:330], 40, 44)
    frames = np.repeat(scene[None], T, axis=0)
    truth = np.zeros((T, H, W), dtype=bool)
    x_of = lambda t: int(20 + min(t, 100) + max(t - 200, 0))  # noqa: E731  stops for frames 100-199
    for t in range(T):
        x = x_of(t)
        frames[t, 60:104, x : x + 40] = patch
        truth[t, 60:104, x : x + 40] = True
    frames = frames + 2 / 255 * rng.standard_normal(frames.shape).astype(np.float32)
    video = torch.from_numpy(np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)).permute(0, 3, 1, 2)
    print("\n## A foreground object that stops: planted 320x180 clip, 300 frames, still for frames 100-199\n")
    print("Recall of the still object (share of its pixels in the mask) over its 100 still frames, and over")
    print("their first and last 20, by `--chunk-frames` and `--components` (ten background frames of each")
    print("chunk are carried into the next, and each chunk solves the next one's first frames for its fade,")
    print("as `lrrtool separate` does).\n")
    print("| --chunk-frames | --components | recall, frames 100-199 | 100-119 | 180-199 | F-measure, whole clip |")
    print("|---|---|---|---|---|---|")
    for components in (0, 1):
        for chunk in (50, 100, 200, 300):
            ahead = blend_frames(chunk)
            chunks = [(video[a : a + chunk + ahead].to(DEVICE), min(chunk, T - a)) for a in range(0, T, chunk)]
            parts = list(separate_chunks(chunks, SeparateSettings(components=components)))
            mask = torch.cat([p.mask.cpu() for p in parts]).numpy()
            spans = ((100, 200), (100, 120), (180, 200))
            recall = [float((mask[a:b] & truth[a:b]).sum() / truth[a:b].sum()) for a, b in spans]
            f = f_measure(torch.from_numpy(mask), torch.from_numpy(truth))
            shown = components or "auto"
            print(f"| {chunk} | {shown} | {recall[0]:.3f} | {recall[1]:.3f} | {recall[2]:.3f} | {f:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--skip-pyrpca", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--memory-frames", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads (default 2)")
    parser.add_argument(
        "--only", choices=["scaled", "hd", "lift", "stopped", "hd1080", "real"], action="append",
        help="run only these sections (default: all but hd1080)",
    )  # fmt: skip
    parser.add_argument("--hd-frames", type=int, default=120)
    parser.add_argument("--hd1080-frames", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    global DEVICE, MOG2_THREADS
    DEVICE, MOG2_THREADS = args.device, args.threads
    torch.set_num_threads(args.threads)
    sections = args.only or ["scaled", "hd", "lift", "stopped", "real"]
    print(
        f"# bench/separate.py, device {DEVICE}, torch threads {torch.get_num_threads()}, OpenCV threads {args.threads}"
    )
    if "scaled" in sections:
        if VTEST.exists():
            real_clip(args.frames, args.skip_pyrpca)
        else:
            print(f"({VTEST} not found: real-clip table skipped)")
        planted(args.skip_pyrpca)
    if "hd" in sections:
        hd(args.hd_frames, args.repeats)
    if "lift" in sections:
        lift_against_full()
    if "stopped" in sections:
        stopped_foreground()
    if "real" in sections:
        real_clips(args.repeats)
    if "hd1080" in sections:
        hd1080(args.hd1080_frames)
    if args.memory:
        memory(args.memory_frames)


if __name__ == "__main__":
    main()
