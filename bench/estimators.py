"""Time (value + gradient) and relative error of every estimator against ``exact``.

Run: ``python bench/estimators.py [--device cpu|cuda] [--sizes 256,1024,2048] [--repeat 3]``.
Matrices have a log-spaced spectrum with condition number 1e3; the penalty is the nuclear
norm (Chebyshev Laplace with --reg chebyshev-laplace). Prints one table.
"""

from __future__ import annotations

import argparse
import time

import torch

from lrrtool import LowRankRegularizer


def matrix(m: int, n: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g))
    sigma = torch.logspace(0, -3, k)
    return ((U * sigma) @ V.T).to(device, dtype)


def timed(reg: LowRankRegularizer, X: torch.Tensor, repeat: int) -> tuple[float, float]:
    def once() -> float:
        Y = X.clone().requires_grad_(True)
        value = reg(Y)
        value.backward()
        return float(value.detach())

    value = once()  # warm-up
    if X.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        once()
    if X.device.type == "cuda":
        torch.cuda.synchronize()
    return value, (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="256,512,1024,2048")
    parser.add_argument("--tall", default="20000x200")
    parser.add_argument("--reg", default="nuclear")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-stochastic-above", type=int, default=1024)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    shapes = [(int(s), int(s)) for s in args.sizes.split(",")] + [tuple(int(v) for v in args.tall.split("x"))]
    estimators = ["exact", "newton-schulz", "stochastic", "auto"]
    print(
        f"device={args.device} dtype=float32 reg={args.reg} torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    print(f"{'shape':>12} | " + " | ".join(f"{e:>22}" for e in estimators))
    print(f"{'':>12} | " + " | ".join(f"{'seconds':>10} {'rel.err':>11}" for _ in estimators))
    for m, n in shapes:
        X = matrix(m, n, args.device, torch.float32)
        reference = float(LowRankRegularizer(args.reg, estimator="exact")(X.double()))
        cells = []
        for name in estimators:
            if name == "stochastic" and min(m, n) > args.skip_stochastic_above:
                cells.append(f"{'skipped':>22}")
                continue
            reg = LowRankRegularizer(args.reg, estimator=name)
            value, seconds = timed(reg, X, args.repeat)
            cells.append(f"{seconds:>10.4f} {abs(value - reference) / reference:>11.2e}")
        print(f"{f'{m}x{n}':>12} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
