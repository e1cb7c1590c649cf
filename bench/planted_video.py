"""Planted-truth colour clips for ``bench/separate.py``: a real photo as the background,
slow lighting drift, an optional sudden dimming, sensor noise, and real image patches
moving across it. The truth mask is known per frame.

The background is scikit-image's ``coffee`` photo (600x400), cropped to 16:9 and resized;
the patches are crops of ``astronaut``, ``chelsea``, ``rocket`` and ``hubble_deep_field``.
Written as H.264 (libx264, crf 12) so that both methods read the same compressed file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Clip:
    path: Path
    truth: np.ndarray  # (T, H, W) bool
    scene: np.ndarray  # (H, W, 3) float32 in [0, 1]: the unlit background photo
    gain: np.ndarray  # (T,): frame t's clean background is scene * gain[t]

    def background(self, t: int) -> np.ndarray:
        return self.scene * self.gain[t]


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC), dtype=np.float32) / 255


def lighting(frames: int, dimming: bool) -> np.ndarray:
    """Per-frame gain: a slow +-3 % drift, and with ``dimming`` an 18 % drop over 8 frames
    starting at 45 % of the clip."""
    t = np.arange(frames, dtype=np.float32)
    gain = 1 + 0.03 * np.sin(2 * np.pi * t / max(frames, 1))
    if dimming:
        start = int(0.45 * frames)
        ramp = np.clip((t - start) / 8, 0, 1)
        gain = gain * (1 - 0.18 * ramp)
    return gain


def write_clip(
    path: Path,
    *,
    width: int = 1280,
    height: int = 720,
    frames: int = 120,
    dimming: bool = True,
    noise: float = 2 / 255,
    seed: int = 0,
    fps: float = 25.0,
) -> Clip:
    """Write the planted clip to ``path`` (mp4) and return its truth."""
    import imageio.v2 as imageio
    import skimage.data as data

    rng = np.random.default_rng(seed)
    coffee = data.coffee()
    crop = coffee[: round(coffee.shape[1] * 9 / 16)]
    background = _resize(crop, width, height)
    scale = width / 1280
    sources = [data.astronaut()[30:230, 150:330], data.chelsea()[60:240, 100:300], data.rocket()[60:300, 250:370]]
    sources.append(data.hubble_deep_field()[300:460, 300:460])
    sizes = [(150, 130), (170, 150), (90, 180), (120, 120)]
    patches = [
        _resize(s, max(8, round(w * scale)), max(8, round(h * scale))) for s, (w, h) in zip(sources, sizes, strict=True)
    ]
    gain = lighting(frames, dimming)
    truth = np.zeros((frames, height, width), dtype=bool)
    with imageio.get_writer(
        path, fps=fps, codec="libx264", macro_block_size=1, output_params=["-crf", "12"], ffmpeg_log_level="error"
    ) as writer:
        for t in range(frames):
            frame = background * gain[t]
            for k, patch in enumerate(patches):
                ph, pw = patch.shape[:2]
                # Each patch crosses the frame on its own straight path, wrapping around.
                x = int((40 + 310 * k + t * (5 + 2 * k) * scale) % (width - pw))
                y = int((60 + 150 * k + t * (2 + k) * scale * (-1) ** k) % (height - ph))
                frame[y : y + ph, x : x + pw] = patch * gain[t]
                truth[t, y : y + ph, x : x + pw] = True
            frame += noise * rng.standard_normal(frame.shape, dtype=np.float32)
            writer.append_data(np.clip(np.round(frame * 255), 0, 255).astype(np.uint8))
    return Clip(path, truth, background, gain)


def f_measure(mask: np.ndarray, truth: np.ndarray) -> float:
    """F1 of a boolean mask against the truth, pooled over all pixels given."""
    tp = float(np.logical_and(mask, truth).sum())
    if tp == 0:
        return 0.0
    precision, recall = tp / float(mask.sum()), tp / float(truth.sum())
    return 2 * precision * recall / (precision + recall)


def mog2_mask_video(source: Path, target: Path, threads: int) -> tuple[np.ndarray, float]:
    """OpenCV MOG2 with its defaults (history 500, varThreshold 16, shadows detected and
    counted as background): decode ``source``, subtract, encode the mask to ``target``.
    Returns the masks ``(T, H, W)`` bool and the seconds of decode + subtract + encode
    (collecting the masks for scoring is outside the timing)."""
    import time

    import cv2

    cv2.setNumThreads(threads)
    masks = []
    start = time.perf_counter()
    capture = cv2.VideoCapture(str(source))
    subtractor = cv2.createBackgroundSubtractorMOG2()
    writer = None
    elapsed_outside = 0.0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        mask = subtractor.apply(frame)
        if writer is None:
            fps = capture.get(cv2.CAP_PROP_FPS) or 25
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, mask.shape[::-1], False)
        writer.write(mask)
        outside = time.perf_counter()
        masks.append(mask == 255)
        elapsed_outside += time.perf_counter() - outside
    capture.release()
    if writer is not None:
        writer.release()
    seconds = time.perf_counter() - start - elapsed_outside
    return np.stack(masks), seconds
