"""Exact spectral shrinkage against the float64 SVD oracle."""

import pytest
import torch
from conftest import conditioned

from lrrtool import LRRError
from lrrtool.core import PENALTIES, SpectralFunction, make_penalty
from lrrtool.core.prox import reweighted_threshold, spectral_slope


def f(name, **params):
    return SpectralFunction(make_penalty(name, **params))


def svd_shrink(S: torch.Tensor, weights) -> torch.Tensor:
    U, sigma, Vh = torch.linalg.svd(S.double(), full_matrices=False)
    return (U * (sigma - weights(sigma)).clamp_min(0).unsqueeze(-2)) @ Vh


@pytest.mark.parametrize("shape", [(30, 12), (12, 30), (4, 9, 20)])
def test_nuclear_step_is_singular_value_soft_thresholding(shape, rng):
    S = torch.randn(shape, generator=rng, dtype=torch.float64)
    out = reweighted_threshold(S, f("nuclear"), 3.5)
    torch.testing.assert_close(out, svd_shrink(S, lambda s: 3.5), atol=1e-10, rtol=1e-10)
    kept = (torch.linalg.svdvals(S) > 3.5).sum(-1)
    assert torch.equal(torch.linalg.matrix_rank(out), kept) and (kept < min(shape[-2:])).all()


def test_lnn_with_debias_is_the_wnnm_weighting(rng):
    S = conditioned(40, 16, 1e3, rng)
    tau, beta, gamma = 0.05, 0.01, 1e-3
    out = reweighted_threshold(S, f("lnn", gamma=gamma), tau, debias=beta)
    expected = svd_shrink(S, lambda s: tau / ((s.square() - beta).clamp_min(0).sqrt() + gamma))
    torch.testing.assert_close(out, expected, atol=1e-9, rtol=1e-9)


def test_per_matrix_threshold_zero_is_identity_and_float32_runs(rng):
    S = torch.randn(3, 10, 6, generator=rng)
    out = reweighted_threshold(S, f("laplace", gamma=0.5), torch.tensor([0.0, 0.1, 0.2]))
    torch.testing.assert_close(out[0], S[0], atol=1e-5, rtol=1e-5)
    assert out.dtype == torch.float32 and out.shape == S.shape
    assert (torch.linalg.svdvals(out[2]) <= torch.linalg.svdvals(S[2]) + 1e-5).all()


@pytest.mark.parametrize("name", [n for n, cls in PENALTIES.items() if not cls.indicator])
def test_slope_matches_finite_differences(name):
    penalty = make_penalty(name, **({"p": 0.5} if name == "schatten-p" else {}))
    sigma = torch.tensor([0.3, 1.0, 3.5], dtype=torch.float64)
    eps = 1e-6
    numeric = (penalty.h(sigma + eps) - penalty.h(sigma - eps)) / (2 * eps)
    slope = spectral_slope(SpectralFunction(penalty), sigma, sigma.max())
    torch.testing.assert_close(slope, numeric, atol=1e-6, rtol=1e-6)


def test_rank_has_no_slope():
    with pytest.raises(LRRError, match="no slope"):
        reweighted_threshold(torch.eye(3), f("rank"), 1.0)


def test_eigh_split_across_workers_is_bit_identical(rng):
    from lrrtool import workers
    from lrrtool.core import matfun

    T = torch.randn(600, 12, 9, generator=rng)
    G = T.mT @ T
    expected = torch.linalg.eigh(G)
    try:
        workers.set_workers(3)
        values, vectors = matfun.batched_eigh(G)
        shrunk = reweighted_threshold(T, SpectralFunction(make_penalty("nuclear")), 0.5)
    finally:
        workers.set_workers(None)
    assert torch.equal(values, expected[0]) and torch.equal(vectors, expected[1])
    assert torch.equal(shrunk, reweighted_threshold(T, SpectralFunction(make_penalty("nuclear")), 0.5))
    assert torch.get_num_threads() == 1  # the workers' own thread setting stays theirs
    with pytest.raises(LRRError, match="workers"):
        workers.set_workers(0)


def test_a_width_per_matrix_gives_the_exact_threshold(rng):
    """Groups of mixed planted rank (0 to 9 of 20) under noise: each solved in the block its
    width names (too narrow ones redone exactly) matches the exact thresholding, and says
    what each kept."""
    ranks = torch.arange(64) % 10
    clean = torch.stack([torch.randn(30, r, generator=rng) @ torch.randn(r, 20, generator=rng) for r in ranks.tolist()])
    S = clean + 0.05 * torch.randn(clean.shape, generator=rng)
    nuclear = f("nuclear")
    exact_kept: list[torch.Tensor] = []
    exact = reweighted_threshold(S, nuclear, 1.0, kept=exact_kept)
    assert set(exact_kept[0].tolist()) == set(range(10))  # the noise is shrunk away, the planted rank kept
    widths = torch.where(ranks % 3 == 0, 2, ranks + 2)  # a third of them too narrow for what they keep
    kept: list[torch.Tensor] = []
    out = reweighted_threshold(S, nuclear, 1.0, subspace=widths, kept=kept)
    assert torch.equal(kept[0], exact_kept[0])
    assert torch.allclose(out, exact, atol=2e-4)
