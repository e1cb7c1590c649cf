"""The spine's contract: forward models, low-rank priors and solvers, each checked for
smoke, shapes, bad input, gradients (float64 gradcheck / autograd) and against exact
oracles, on every available device."""

import pytest
import torch

from lrrtool import LowRankRegularizer, LRRError
from lrrtool.forward import FORWARD_MODELS, GaussianNoise, Inpainting, SparseNoise, soft_threshold
from lrrtool.priors import LIFTS, ChannelMatrices, FramesAsColumns, LowRankPrior, PatchGroupLift
from lrrtool.solvers import proximal_gradient, robust_pca


def make_forward(name: str, y: torch.Tensor, rng: torch.Generator):
    if name == "inpainting":
        return Inpainting(y, (torch.rand(y.shape[-2:], generator=rng) < 0.4).to(y.device))
    return GaussianNoise(y, 0.3) if name == "gaussian-noise" else SparseNoise(y)


def make_lift(name: str, x: torch.Tensor):
    if name == "patch-groups":
        lift = PatchGroupLift(patch=3, group=4, stride=2, window=2)
        lift.refresh(x)
        return lift
    return LIFTS[name]()


def signal(lift: str, rng: torch.Generator, device) -> torch.Tensor:
    shape = (6, 2, 5, 4) if lift == "frames" else (2, 9, 7)  # odd sizes on purpose
    return torch.rand(shape, generator=rng, dtype=torch.float64).to(device)


# ------------------------------------------------------------------ forward models
@pytest.mark.parametrize("name", list(FORWARD_MODELS))
def test_forward_model_contract(name, device, rng):
    y = torch.rand(3, 7, 5, generator=rng, dtype=torch.float64).to(device)
    model = make_forward(name, y, rng)
    x = torch.rand(3, 7, 5, generator=rng, dtype=torch.float64).to(device)
    assert model(x).shape == () and torch.equal(model(x), model.value(x))  # function == module
    assert model.grad(x).shape == x.shape and model.prox(x, 0.7).shape == x.shape
    assert model.project(x).shape == x.shape and torch.equal(model.project(model.project(x)), model.project(x))
    if name != "sparse-noise":  # smooth: grad is the autograd gradient; prox is optimal
        z = x.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(model.value(z), z)
        torch.testing.assert_close(model.grad(x), auto)
        assert torch.autograd.gradcheck(model.value, (z,))
        p = model.prox(x, 0.7)
        torch.testing.assert_close(0.7 * model.grad(p) + p - x, torch.zeros_like(x), atol=1e-12, rtol=0)
    else:
        torch.testing.assert_close(model.prox(x, 0.1), y + soft_threshold(x - y, 0.1))
    torch.testing.assert_close(model.gradient_step(x, 0.2), x - 0.2 * model.grad(x))


def test_inpainting_projects_onto_the_observed_pixels(rng):
    y = torch.rand(2, 6, 6, generator=rng)
    missing = torch.zeros(6, 6, dtype=torch.bool)
    missing[2:4, 1:5] = True
    model = Inpainting(y, missing)
    x = model.project(torch.full_like(y, 5.0))
    assert torch.equal(x[:, ~missing], y[:, ~missing]) and (x[:, missing] == 5).all()
    assert float(model.value(x)) == 0.0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda y: Inpainting(y, torch.zeros(3, 3, dtype=torch.bool)), "mask must be bool of shape (6, 6)"),
        (lambda y: Inpainting(y, torch.zeros(6, 6)), "mask must be bool"),
        (lambda y: GaussianNoise(y, 0.0), "sigma must be a finite number > 0"),
        (lambda y: GaussianNoise(y, float("nan")), "sigma must be a finite number > 0"),
    ],
)
def test_forward_model_bad_input(make, message):
    with pytest.raises(LRRError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(torch.rand(2, 6, 6))


# ------------------------------------------------------------------ priors
@pytest.mark.parametrize("lift_name", list(LIFTS))
def test_prior_contract(lift_name, device, rng):
    x = signal(lift_name, rng, device)
    lift = make_lift(lift_name, x)
    prior = LowRankPrior(LowRankRegularizer("nuclear", estimator="exact"), lift)
    matrices = lift.matrices(x)
    assert tuple(matrices.shape[-2:]) == lift.matrix_shape(x)
    if lift_name != "patch-groups":  # covers every entry exactly once
        torch.testing.assert_close(lift.fold(matrices, x), x)
    centred = matrices - matrices.mean(-2, keepdim=True) if lift.centred else matrices
    oracle = torch.linalg.svdvals(centred).sum()
    torch.testing.assert_close(prior.value(x), oracle)  # the value is the SVD oracle
    smooth = LowRankPrior(LowRankRegularizer("schatten-p", p=2.0, estimator="exact"), lift)  # nuclear has kinks
    assert torch.autograd.gradcheck(smooth.value, (x.clone().requires_grad_(True),))
    torch.testing.assert_close(prior.prox(x, 0.0), x)  # tau = 0: identity
    shrunk = prior.prox(x, 0.05)
    assert shrunk.shape == x.shape and not shrunk.requires_grad
    assert float(prior.value(shrunk)) < float(prior.value(x))


@pytest.mark.parametrize("lift", [ChannelMatrices(), FramesAsColumns()])
def test_nuclear_prox_is_singular_value_soft_thresholding(lift, rng):
    x = signal("frames" if isinstance(lift, FramesAsColumns) else "channels", rng, "cpu")
    M = lift.matrices(x)
    U, sigma, Vh = torch.linalg.svd(M, full_matrices=False)
    expected = lift.fold((U * (sigma - 0.4).clamp_min(0).unsqueeze(-2)) @ Vh, x)
    out = LowRankPrior(LowRankRegularizer("nuclear"), lift).prox(x, 0.4)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


def test_series_prefix_drives_the_prox_weights(rng):
    """laguerre-laplace thresholds with the Laguerre series' slope: close to laplace, not equal."""
    x = torch.rand(3, 24, 20, generator=rng, dtype=torch.float64)
    exact = LowRankPrior(LowRankRegularizer("laplace", gamma=2.0), ChannelMatrices()).prox(x, 0.5)
    series = LowRankPrior(LowRankRegularizer("laguerre-laplace", gamma=2.0), ChannelMatrices()).prox(x, 0.5)
    difference = float((series - exact).abs().max())
    assert 1e-8 < difference < 0.05 * float(x.abs().max()), difference


def test_prior_bad_input():
    with pytest.raises(LRRError, match="call refresh"):
        PatchGroupLift(patch=3, group=4, stride=2, window=2).matrices(torch.rand(1, 8, 8))
    with pytest.raises(LRRError, match=r"expected a video \(T, C, H, W\)"):
        FramesAsColumns().matrices(torch.rand(8, 8))
    with pytest.raises(LRRError, match="no slope"):
        LowRankPrior(LowRankRegularizer("rank"), ChannelMatrices()).prox(torch.rand(1, 4, 4), 0.1)


# ------------------------------------------------------------------ solvers
def test_proximal_gradient_completes_a_planted_low_rank_matrix_and_says_converged(rng):
    """Singular-value thresholding with a falling threshold (Soft-Impute) recovers a
    rank-2 40x30 matrix from 60 % of its entries; the stop rule fires."""
    truth = (
        torch.randn(40, 2, generator=rng, dtype=torch.float64) @ torch.randn(2, 30, generator=rng, dtype=torch.float64)
    )[None]
    missing = torch.rand(40, 30, generator=rng) < 0.4
    forward = Inpainting(truth, missing)
    prior = LowRankPrior(LowRankRegularizer("nuclear"), ChannelMatrices())
    falling = lambda k, y: (5.0 * 0.9**k, 0.0)  # noqa: E731
    x, result = proximal_gradient(forward, prior, forward.observed, falling, iters=400, tol=1e-9)
    assert result.converged and result.metric == "change" and result.iterations < 400
    assert float((x - truth).norm() / truth.norm()) < 1e-3


def test_robust_pca_separates_a_planted_low_rank_plus_sparse(rng):
    L = torch.randn(400, 2, generator=rng, dtype=torch.float64) @ torch.randn(2, 60, generator=rng, dtype=torch.float64)
    S = torch.zeros_like(L)
    support = torch.rand(L.shape, generator=rng) < 0.05
    S[support] = 10 * torch.randn(int(support.sum()), generator=rng, dtype=torch.float64)
    V = (L + S).mT.reshape(60, 1, 40, 10)  # frames as columns
    prior = LowRankPrior(LowRankRegularizer("nuclear"), FramesAsColumns())
    weight = 1 / max(L.shape) ** 0.5
    low, result = robust_pca(SparseNoise(V), prior, weight=weight, iters=200, tol=1e-9)
    assert result.converged and result.metric == "residual"
    recovered = prior.lift.matrices(low)
    assert float((recovered - L).norm() / L.norm()) < 1e-5
