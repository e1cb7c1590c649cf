"""The EDLRR paper's DnCNN experiment: train a small DnCNN with and without the low-rank
term, at one noise level, and test it at several.

Run: ``python bench/dncnn.py [--steps 800] [--train-sigma 25] [--lam 0.1] [--reg nuclear]``.

The paper trains a noise-predicting DnCNN ``f`` on
:math:`\\|f(X;\\theta) - N\\|_F^2 + \\lambda R(f(X;\\theta) - N)` and claims large gains at
noise levels it was not trained on. Here, on the 2-core CPU and with local images only
(no downloads, no weights shipped; everything is reproducible from this script):

- Training: seeded random 40x40 crops of scikit-image's grey or greyed photos that are
  *not* used for testing (rocket, retina, clock, brick, grass, gravel, motorcycle),
  Gaussian noise of ``--train-sigma``, Adam (lr 1e-3, cosine), batch 32, ``--steps``.
- Model: residual DnCNN, 8 conv layers of 32 channels, ReLU, no batch norm.
- The two runs share the seed, the data order and the initial weights; the only
  difference is :math:`\\lambda R` of the per-crop ``40 x 40`` error matrices (``--reg``,
  exact estimator from ``lrrtool.core``).
- Test: camera, moon, coins at sigma 15, 25, 50 (seeded noise), PSNR.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from skimage import color, data

from lrrtool.core import LowRankRegularizer
from lrrtool.metrics import psnr

TEST = ("camera", "moon", "coins")


def grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        image = color.rgb2gray(image[..., :3])
    return image.astype(np.float32) / (255 if image.dtype == np.uint8 else 1)


def training_images() -> list[torch.Tensor]:
    images = [
        data.rocket(),
        data.retina(),
        data.clock(),
        data.brick(),
        data.grass(),
        data.gravel(),
        data.stereo_motorcycle()[0],
    ]
    return [torch.from_numpy(grey(im)) for im in images]


def batches(images: list[torch.Tensor], size: int, batch: int, sigma: float, g: torch.Generator):
    while True:
        crops = []
        for _ in range(batch):
            im = images[int(torch.randint(len(images), (1,), generator=g))]
            y = int(torch.randint(im.shape[0] - size, (1,), generator=g))
            x = int(torch.randint(im.shape[1] - size, (1,), generator=g))
            crop = im[y : y + size, x : x + size]
            if bool(torch.rand(1, generator=g) < 0.5):
                crop = crop.flip(1)
            crops.append(crop)
        clean = torch.stack(crops)[:, None]
        noise = sigma / 255 * torch.randn(clean.shape, generator=g)
        yield clean + noise, noise


class DnCNN(torch.nn.Module):
    def __init__(self, depth: int = 8, width: int = 32) -> None:
        super().__init__()
        layers = [torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.ReLU()]
        for _ in range(depth - 2):
            layers += [torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU()]
        layers.append(torch.nn.Conv2d(width, 1, 3, padding=1))
        self.body = torch.nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.body(noisy)  # the predicted noise


def train(steps: int, sigma: float, lam: float, reg: str, seed: int) -> tuple[DnCNN, float]:
    torch.manual_seed(seed)
    model = DnCNN()
    regularizer = LowRankRegularizer(reg, estimator="exact")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-5)
    stream = batches(training_images(), 40, 32, sigma, torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    for step in range(steps):
        noisy, noise = next(stream)
        error = model(noisy) - noise  # (B, 1, 40, 40)
        loss = error.square().sum() / len(error)
        if lam > 0:
            loss = loss + lam * regularizer(error[:, 0]) / len(error)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if not math.isfinite(loss.item()):
            raise SystemExit(f"diverged at step {step}")
    return model, time.perf_counter() - start


def evaluate(model: DnCNN, sigma: float) -> list[float]:
    scores = []
    for index, name in enumerate(TEST):
        clean = torch.from_numpy(grey(getattr(data, name)()))[None, None]
        g = torch.Generator().manual_seed(100 * int(sigma) + index)
        noisy = clean + sigma / 255 * torch.randn(clean.shape, generator=g)
        with torch.no_grad():
            out = (noisy - model(noisy)).clamp(0, 1)
        scores.append(psnr(out[0], clean[0]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--train-sigma", type=float, default=25)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--reg", default="nuclear")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"# bench/dncnn.py, torch threads {torch.get_num_threads()}, train sigma {args.train_sigma}, "
        f"{args.steps} steps, reg {args.reg}, lam {args.lam}"
    )
    runs = {"DnCNN (MSE)": 0.0, f"DnCNN + {args.lam} {args.reg}": args.lam}
    results = {}
    for name, lam in runs.items():
        model, seconds = train(args.steps, args.train_sigma, lam, args.reg, args.seed)
        results[name] = {sigma: evaluate(model, sigma) for sigma in (15, 25, 50)}
        print(f"trained {name} in {seconds:.0f} s", flush=True)
    print(f"\n## Test PSNR (dB) on {', '.join(TEST)}, trained at sigma {args.train_sigma:.0f}\n")
    print("| model | sigma 15 | sigma 25 | sigma 50 | per image (15 / 25 / 50) |")
    print("|---|---|---|---|---|")
    for name, table in results.items():
        means = " | ".join(f"{np.mean(table[s]):.2f}" for s in (15, 25, 50))
        detail = " / ".join(" ".join(f"{v:.2f}" for v in table[s]) for s in (15, 25, 50))
        print(f"| {name} | {means} | {detail} |")


if __name__ == "__main__":
    main()
