import math

import pytest
import torch

from lrrtool import LRRError
from lrrtool.solvers import minimize


def test_minimize_converges_on_a_quadratic_and_reports_progress():
    x = torch.zeros(5, requires_grad=True)
    target = torch.arange(5.0)
    seen = []
    result = minimize(lambda: (x - target).square().sum(), [x], iters=2000, lr=0.1, tol=1e-9, callback=seen.append)
    torch.testing.assert_close(x.detach(), target, atol=1e-3, rtol=0)
    assert seen and seen[0].iteration == 10 and seen[0].total == 2000
    assert result.metric == "loss" and result.value < 1e-5 and result.iterations <= 2000


def test_stopping_rule_needs_two_checks():
    x = torch.ones(1, requires_grad=True)
    result = minimize(lambda: (x * 0).sum() + 1.0, [x], iters=100, lr=0.1, tol=1e-6)
    assert result.converged and result.iterations == 20  # first check cannot stop


def test_divergence_is_detected_with_a_hint():
    x = torch.ones(3, requires_grad=True)
    with pytest.raises(LRRError, match=r"diverged at iteration \d+.*lower the learning rate"):
        minimize(lambda: torch.exp(x * 1e3).sum(), [x], iters=50, lr=1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iters": 0}, "iters"),
        ({"lr": -1.0}, "lr must be"),
        ({"lr": math.nan}, "lr must be"),
        ({"tol": -1.0}, "tol must be"),
    ],
)
def test_bad_solver_settings(kwargs, message):
    x = torch.ones(1, requires_grad=True)
    with pytest.raises(LRRError, match=message):
        minimize(lambda: x.sum(), [x], **kwargs)
