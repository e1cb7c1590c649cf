"""Contract tests for every penalty x estimator against the float64 SVD oracle."""

import math

import pytest
import torch
from conftest import conditioned, matrix_with_spectrum

from lrrtool import LowRankRegularizer, LRRError
from lrrtool.core import ESTIMATORS, PENALTIES, SERIES, make_penalty, regularizer_names

GAMMA_PENALTIES = [name for name, cls in PENALTIES.items() if "gamma" in cls.parameters]
SMOOTH = [name for name, cls in PENALTIES.items() if not cls.indicator]


def penalty_kwargs(name: str) -> dict:
    prefix = name.split("-", 1)[0]
    base = name.split("-", 1)[1] if prefix in SERIES else name
    if base == "schatten-p":
        return {"p": 2.0 if prefix == "taylor" else 0.5}  # sigma^0.5 has no Maclaurin series
    return {"gamma": 1.0} if base in GAMMA_PENALTIES else {}


def oracle(reg: LowRankRegularizer, X: torch.Tensor) -> float:
    sigma = torch.linalg.svdvals(X.double())
    if reg.function.penalty.indicator:
        return float((sigma > max(X.shape[-2:]) * 1e-15 * sigma[..., :1]).sum())
    return float(reg.function.penalty.h(sigma).sum().detach())


# ---------------------------------------------------------------- exact estimator


@pytest.mark.parametrize("name", list(PENALTIES))
def test_exact_equals_svd_oracle(name, rng):
    X = conditioned(50, 35, 1e3, rng)
    reg = LowRankRegularizer(name, estimator="exact", **penalty_kwargs(name))
    assert float(reg(X)) == pytest.approx(oracle(reg, X), rel=1e-8)


@pytest.mark.parametrize("name", SMOOTH)
def test_exact_gradcheck(name, rng):
    X = conditioned(7, 5, 10, rng).requires_grad_(True)
    reg = LowRankRegularizer(name, estimator="exact", **penalty_kwargs(name))
    assert torch.autograd.gradcheck(reg, (X,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", SMOOTH)
def test_exact_gradient_is_u_hprime_vt(name, rng):
    X = conditioned(9, 6, 30, rng).requires_grad_(True)
    reg = LowRankRegularizer(name, estimator="exact", **penalty_kwargs(name))
    reg(X).backward()
    U, s, Vh = torch.linalg.svd(X.detach(), full_matrices=False)
    s_ = s.clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(reg.function.penalty.h(s_).sum(), s_)
    torch.testing.assert_close(X.grad, U @ torch.diag(slope) @ Vh, rtol=1e-7, atol=1e-9)


def test_rank_deficient_gradient_is_finite(rng):
    X = matrix_with_spectrum(torch.tensor([2.0, 1.0, 0.0, 0.0], dtype=torch.float64), 8, 6, rng)
    for name in ("nuclear", "laplace", "schatten-p"):
        Y = X.clone().requires_grad_(True)
        LowRankRegularizer(name, estimator="exact").forward(Y).backward()
        assert torch.isfinite(Y.grad).all(), name


# ------------------------------------------------------------ newton-schulz


@pytest.mark.parametrize("shape", [(60, 40), (40, 60), (200, 20)])
def test_newton_schulz_nuclear_within_one_percent(shape, rng):
    X = conditioned(*shape, 1e3, rng).requires_grad_(True)
    reg = LowRankRegularizer("nuclear", estimator="newton-schulz")
    value = reg(X)
    assert float(value.detach()) == pytest.approx(oracle(reg, X), rel=0.01)
    value.backward()
    U, _, Vh = torch.linalg.svd(X.detach(), full_matrices=False)
    polar = U @ Vh
    cosine = (X.grad * polar).sum() / (X.grad.norm() * polar.norm())
    assert cosine >= 0.95


@pytest.mark.parametrize("series", list(SERIES))
@pytest.mark.parametrize("name", [n for n in GAMMA_PENALTIES])
def test_series_within_five_percent_up_to_five_gamma(series, name, rng):
    # singular values spread over [0.05, 5] gamma (gamma = 1)
    sigma = torch.linspace(5.0, 0.05, 30, dtype=torch.float64)
    X = matrix_with_spectrum(sigma, 45, 30, rng)
    for estimator in ("exact", "newton-schulz"):
        reg = LowRankRegularizer(f"{series}-{name}", estimator=estimator, gamma=1.0, degree=None)
        try:
            value = float(reg(X))
        except LRRError as error:
            # a Taylor series with a finite radius must refuse, not return garbage
            assert series == "taylor" and "accurate only" in str(error)
            continue
        assert value == pytest.approx(oracle(reg, X), rel=0.05), estimator


@pytest.mark.parametrize("name", [n for n in SMOOTH if n != "schatten-p"])
def test_newton_schulz_gradcheck_small_well_conditioned(name):
    rng = torch.Generator().manual_seed(7)
    X = conditioned(6, 4, 3, rng).requires_grad_(True)
    reg = LowRankRegularizer(name, estimator="newton-schulz", sqrt_iters=40, **penalty_kwargs(name))
    assert torch.autograd.gradcheck(reg, (X,), eps=1e-6, atol=1e-5, rtol=1e-5)


def test_newton_schulz_schatten_half_gradient_direction(rng):
    # sigma^0.5 goes through a Chebyshev fit whose coefficients follow the (detached)
    # sigma_1 bound, so finite differences differ from the analytic gradient; check the
    # direction against the exact gradient instead.
    X = conditioned(30, 20, 100, rng)
    grads = []
    for estimator in ("exact", "newton-schulz"):
        Y = X.clone().requires_grad_(True)
        LowRankRegularizer("schatten-p", p=0.5, estimator=estimator)(Y).backward()
        grads.append(Y.grad)
    cosine = (grads[0] * grads[1]).sum() / (grads[0].norm() * grads[1].norm())
    assert cosine > 0.95


# --------------------------------------------------------------- stochastic


def test_stochastic_mean_within_five_percent_and_variance_falls_as_one_over_n(rng):
    X = conditioned(30, 20, 100, rng)
    exact = float(LowRankRegularizer("nuclear", estimator="exact")(X))
    stats = {}
    for probes in (4, 16):
        gen = torch.Generator().manual_seed(99)
        reg = LowRankRegularizer("nuclear", estimator="stochastic", probes=probes, generator=gen)
        draws = torch.tensor([float(reg(X)) for _ in range(300)], dtype=torch.float64)
        assert float(draws.mean()) == pytest.approx(exact, rel=0.05)
        stats[probes] = float(draws.var())
    ratio = stats[4] / stats[16]
    assert 2.5 < ratio < 6.5, ratio  # 4x more probes, 4x less variance


def test_stochastic_rank_and_laplace_unbiased(rng):
    X = matrix_with_spectrum(torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64), 20, 12, rng)
    for name, kwargs in (("rank", {}), ("laplace", {"gamma": 1.0})):
        gen = torch.Generator().manual_seed(3)
        reg = LowRankRegularizer(name, estimator="stochastic", probes=256, generator=gen, **kwargs)
        mean = sum(float(reg(X)) for _ in range(40)) / 40
        assert mean == pytest.approx(oracle(reg, X), rel=0.05), name


def test_stochastic_is_reproducible_with_a_seeded_generator(rng):
    X = conditioned(20, 10, 10, rng)
    values = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(5)
        reg = LowRankRegularizer("laplace", estimator="stochastic", generator=gen, gamma=1.0)
        values.append(float(reg(X)))
    assert values[0] == values[1]


def test_stochastic_gradient_flows(rng):
    X = conditioned(12, 8, 10, rng).requires_grad_(True)
    LowRankRegularizer("nuclear", estimator="stochastic", probes=512)(X).backward()
    U, _, Vh = torch.linalg.svd(X.detach(), full_matrices=False)
    polar = U @ Vh
    assert (X.grad * polar).sum() / (X.grad.norm() * polar.norm()) > 0.9


# ------------------------------------------------------------ contract: all


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
@pytest.mark.parametrize("name", regularizer_names())
def test_every_regularizer_and_estimator_contract(name, estimator, device, rng):
    """Batch shape, dtype/device preserved, gradient finite and of the right shape."""
    base = conditioned(9, 6, 5, rng, top=0.5)  # sigma_1 < gamma/2 keeps Taylor in range
    X = torch.stack([base, 0.5 * base]).reshape(2, 1, 9, 6)
    for dtype in (torch.float64, torch.float32):
        Y = X.to(device=device, dtype=dtype).clone().requires_grad_(True)
        reg = LowRankRegularizer(name, estimator=estimator, **penalty_kwargs(name))
        value = reg(Y)
        assert value.shape == () and value.dtype == dtype and value.device.type == device.type
        value.backward()
        assert Y.grad.shape == Y.shape and torch.isfinite(Y.grad).all()
        singles = sum(float(reg(Y[i, 0]).detach()) for i in range(2))
        tol = 0.25 if estimator == "stochastic" else (1e-3 if dtype == torch.float32 else 1e-6)
        assert float(value.detach()) == pytest.approx(singles, rel=tol, abs=tol)


def test_auto_matches_exact_on_cpu(rng):
    X = conditioned(30, 20, 100, rng)
    for name in ("nuclear", "laplace"):
        a = LowRankRegularizer(name, estimator="auto")(X)
        e = LowRankRegularizer(name, estimator="exact")(X)
        assert float(a) == float(e)


def test_zero_and_empty_matrices():
    for estimator in ESTIMATORS:
        reg = LowRankRegularizer("laplace", estimator=estimator)
        assert float(reg(torch.zeros(5, 4, dtype=torch.float64))) == pytest.approx(0, abs=1e-12)
        assert float(reg(torch.zeros(0, 4))) == 0


# ------------------------------------------------------------ bad parameters


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("frobenius",), {}, "is unknown"),
        (("bessel-laplace",), {}, "is unknown"),
        (("laplace",), {"gamma": -1.0}, "gamma must be"),
        (("laplace",), {"gamma": math.nan}, "gamma must be"),
        (("schatten-p",), {"p": 0.0}, "p must be"),
        (("nuclear",), {"gamma": 2.0}, "takes no parameters"),
        (("laplace",), {"p": 2.0}, "takes gamma"),
        (("laplace",), {"degree": 8}, "degree applies to a series"),
        (("chebyshev-laplace",), {"degree": 0}, "degree must be"),
        (("chebyshev-laplace",), {"degree": 500}, "degree must be"),
        (("taylor-schatten-p",), {"p": 0.5}, "no Maclaurin series"),
        (("laguerre-rank",), {}, "rank indicator has no series"),
        (("nuclear",), {"estimator": "magic"}, "estimator must be one of"),
        (("nuclear",), {"estimator": "exact", "probes": 8}, "does not take probes"),
        (("nuclear",), {"estimator": "stochastic", "probes": 0}, "probes must be"),
    ],
)
def test_bad_parameters_are_rejected_with_a_message(args, kwargs, message):
    with pytest.raises(LRRError, match=message):
        LowRankRegularizer(*args, **kwargs)


def test_taylor_outside_its_range_refuses(rng):
    X = conditioned(10, 8, 10, rng, top=50.0)
    reg = LowRankRegularizer("taylor-gamma-nuclear", estimator="exact", gamma=1.0)
    with pytest.raises(LRRError, match="accurate only for singular values up to"):
        reg(X)


def test_bad_inputs():
    reg = LowRankRegularizer("nuclear")
    with pytest.raises(LRRError, match=r"shape \(\.\.\., m, n\)"):
        reg(torch.ones(3))
    with pytest.raises(LRRError, match="floating-point"):
        reg(torch.ones(3, 3, dtype=torch.int64))


def test_penalty_registry_docstrings_state_gamma_units():
    for name in GAMMA_PENALTIES:
        doc = PENALTIES[name].__doc__
        assert "gamma" in doc and "units" in doc, name
    assert make_penalty("laplace", gamma=2.0).gamma == 2.0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_picks_newton_schulz_for_large_and_agrees():
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = torch.Generator().manual_seed(0)
    X = conditioned(1024, 600, 100, rng).to("cuda", torch.float32)
    from lrrtool.core import choose_estimator

    reg = LowRankRegularizer("nuclear", estimator="auto")
    assert choose_estimator(X, reg.function) == "newton-schulz"
    assert float(reg(X)) == pytest.approx(oracle(reg, X.cpu()), rel=0.01)
