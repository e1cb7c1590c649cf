"""Where the Laguerre series puts sigma_1: the span measurement that
``lrrtool/core/series.py`` cites (``LaguerreSeries.span_per_degree``).

Run: ``python bench/series.py [--degree 16] [--photo]``.

``--photo`` also inpaints the bundled photo (text mask, and a seeded 50 % drop) with the
default threshold solver under ``laplace``, ``laguerre-laplace``, ``chebyshev-laplace``,
``lnn`` and ``laguerre-lnn``: a series prefix changes the threshold weights, so the
outputs differ; missing-pixel PSNR and seconds.

The EDLRR paper expands ``h(ell x)`` in Laguerre polynomials; we tie the length ``ell`` to
the largest singular value so that ``[0, sigma_1]`` maps to ``[0, span]`` with ``span =
span_per_degree * degree``. For each candidate ``span_per_degree`` this prints the error
of the truncated series against the exact ``h`` on ``[0, sigma_1]`` (2000 points,
relative to ``h(sigma_1)``), worst and median over every penalty with a scale (gamma-
nuclear, laplace, lnn, logarithm, etp, geman; their default gamma) and ``sigma_1 /
gamma`` from 0.1 to 100 (``1 / gamma`` units for logarithm and etp), and, for
comparison, the Chebyshev series of the same degree. float64, CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lrrtool.core import PENALTIES, make_penalty
from lrrtool.core.series import ChebyshevSeries, LaguerreSeries

SPANS = (0.25, 0.35, 0.5, 0.75, 1.0)
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def errors(series_of, degree: int) -> torch.Tensor:
    """Relative sup-errors over penalties x sigma_1 ratios."""
    out = []
    for name, cls in PENALTIES.items():
        if "gamma" not in cls.parameters:
            continue
        penalty = make_penalty(name)
        unit = 1 / penalty.gamma if name in ("logarithm", "etp") else penalty.gamma
        series = series_of(penalty, degree)
        for ratio in torch.logspace(-1, 2, 13, dtype=torch.float64):
            top = ratio * unit
            sigma = torch.linspace(0, float(top), 2000, dtype=torch.float64)
            approx = series.polynomial(top.reshape(1))(sigma[None])[0]
            exact = penalty.h(sigma)
            out.append(float((approx - exact).abs().max() / exact[-1].abs()))
    return torch.tensor(out)


def photo() -> None:
    from lrrtool.media import read_image, read_mask
    from lrrtool.metrics import psnr
    from lrrtool.tasks.inpaint import InpaintSettings, inpaint

    image = read_image(SAMPLES / "photo.jpg")
    masks = {
        "text": read_mask(SAMPLES / "text-mask.png", tuple(image.shape[-2:])),
        "drop 50 %": torch.rand(image.shape[-2:], generator=torch.Generator().manual_seed(0)) < 0.5,
    }
    print("\n## Bundled photo, threshold solver, missing-pixel PSNR (dB) and seconds\n")
    regs = ("laplace", "laguerre-laplace", "chebyshev-laplace", "lnn", "laguerre-lnn")
    print("| mask | " + " | ".join(regs) + " |")
    print("|---|" + "---|" * len(regs))
    for name, fill in masks.items():
        cells = []
        for reg in regs:
            started = time.perf_counter()
            out, _ = inpaint(image.masked_fill(fill, 0), fill, InpaintSettings(reg=reg))
            cells.append(f"{psnr(out, image, fill):.2f} ({time.perf_counter() - started:.1f} s)")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--degree", type=int, default=16)
    parser.add_argument("--photo", action="store_true")
    args = parser.parse_args()
    print(f"# bench/series.py, degree {args.degree}, float64, CPU, torch threads {torch.get_num_threads()}\n")
    print("| series | span per degree | worst relative error | median |")
    print("|---|---|---|---|")
    for span in SPANS:

        def laguerre(penalty, degree, span=span):
            series = LaguerreSeries(penalty, degree)
            series.span_per_degree = span
            return series

        e = errors(laguerre, args.degree)
        print(f"| laguerre | {span} | {float(e.max()):.3g} | {float(e.median()):.3g} |")
    e = errors(ChebyshevSeries, args.degree)
    print(f"| chebyshev | – | {float(e.max()):.3g} | {float(e.median()):.3g} |")
    if args.photo:
        photo()


if __name__ == "__main__":
    main()
