"""Planted-truth tests for each task."""

import pytest
import torch

from lrrtool import LowRankRegularizer, LRRError
from lrrtool.metrics import psnr
from lrrtool.solvers import minimize
from lrrtool.tasks.denoise import DenoiseSettings, denoise
from lrrtool.tasks.inpaint import InpaintSettings, inpaint
from lrrtool.tasks.starts import (
    biharmonic_fill,
    choose_start,
    harmonic_fill,
    held_out_factor,
    laplacian_energy,
    low_rank_fills,
    push_pull_fill,
    reduce_masked,
    wide_hole,
)
from lrrtool.video import SeparateSettings, foreground_mask, separate


def test_low_rank_matrix_recovered_from_half_its_entries():
    """Matrix completion with the core: rank-3 60x50, 50 % observed, to 1e-3 relative error."""
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(60, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 50, generator=g, dtype=torch.float64)
    observed = torch.rand(60, 50, generator=g) < 0.5
    reg = LowRankRegularizer("nuclear", estimator="exact")
    free = torch.zeros(int((~observed).sum()), dtype=torch.float64, requires_grad=True)

    def assemble():
        x = truth.clone()
        x[~observed] = free
        return x

    minimize(lambda: reg(assemble()), [free], iters=3000, lr=0.05, tol=0)
    error = (assemble().detach() - truth).norm() / truth.norm()
    assert error < 1e-3, float(error)


def _image(seed=0, size=48):
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    stripes = 0.5 + 0.3 * torch.sin(12 * x) * torch.cos(5 * y)
    return torch.stack([stripes, 0.8 * stripes, 1 - stripes]) + 0.01 * torch.randn(3, size, size, generator=g)


@pytest.mark.parametrize("solver", ["threshold", "adam"])
def test_inpaint_block_improves_over_zero_fill_and_keeps_observed_pixels(solver):
    image = _image().clamp(0, 1)
    fill = torch.zeros(48, 48, dtype=torch.bool)
    fill[18:30, 18:30] = True
    observed = image.masked_fill(fill, 0)
    out, result = inpaint(observed, fill, InpaintSettings(solver=solver, iters=60 if solver == "adam" else None))
    assert torch.equal(out[:, ~fill], image[:, ~fill])  # observed pixels exactly kept
    assert psnr(out, image, fill) > psnr(observed, image, fill) + 10
    assert result.iterations >= 1


def test_the_subspace_step_fills_as_the_exact_step_does():
    """Inpainting's default shrinks each group on its largest singular pairs only (a
    width per group, misses redone exactly): the fill is the exact step's to within the
    subspace iteration's accuracy."""
    image = _image(6, size=64).clamp(0, 1)
    fill = torch.rand(64, 64, generator=torch.Generator().manual_seed(7)) < 0.3
    observed = image.masked_fill(fill, 0)
    assert InpaintSettings().resolved().subspace
    fast, _ = inpaint(observed, fill)
    exact, _ = inpaint(observed, fill, InpaintSettings(subspace=False))
    assert (fast - exact).abs().max() < 5e-3
    assert abs(psnr(fast, image, fill) - psnr(exact, image, fill)) < 0.01


def test_low_rank_refinement_beats_its_biharmonic_start_on_repeated_texture():
    """Stripes repeat, so similar patches exist: the patch prior must add to biharmonic."""
    image = _image(4, size=64).clamp(0, 1)
    fill = torch.rand(64, 64, generator=torch.Generator().manual_seed(5)) < 0.5
    observed = image.masked_fill(fill, 0)
    start = biharmonic_fill(observed, fill)
    out, _ = inpaint(observed, fill)
    assert psnr(out, image, fill) > psnr(start, image, fill) + 0.5


def test_biharmonic_fill_is_exact_on_a_ramp_and_push_pull_fills_everything():
    y, x = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 30), indexing="ij")
    ramp = torch.stack([0.2 + 0.5 * x, 0.9 - 0.6 * y]).double()
    fill = torch.rand(40, 30, generator=torch.Generator().manual_seed(3)) < 0.5
    fill[:2], fill[-2:], fill[:, :2], fill[:, -2:] = False, False, False, False  # a known frame: unique minimiser
    start = push_pull_fill(ramp.masked_fill(fill, 0), fill)
    assert torch.isfinite(start).all() and torch.equal(start[:, ~fill], ramp[:, ~fill])
    filled = biharmonic_fill(ramp.masked_fill(fill, 0), fill, iters=2000, tol=1e-12)
    torch.testing.assert_close(filled, ramp, atol=1e-6, rtol=0)


def test_harmonic_fill_is_exact_on_a_ramp_and_stays_within_the_values_around_a_hole():
    """The membrane fill: exact on a linear ramp (its Laplacian is 0) and, by the maximum
    principle, within the range of the observed pixels; the biharmonic fill of the same
    texture overshoots it (the reason clips start from the harmonic fill)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 30), indexing="ij")
    ramp = torch.stack([0.2 + 0.5 * x, 0.9 - 0.6 * y]).double()
    fill = torch.rand(40, 30, generator=torch.Generator().manual_seed(3)) < 0.5
    fill[:1], fill[-1:], fill[:, :1], fill[:, -1:] = False, False, False, False
    filled = harmonic_fill(ramp.masked_fill(fill, 0), fill, iters=2000, tol=1e-12)
    torch.testing.assert_close(filled, ramp, atol=1e-6, rtol=0)
    grain = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)  # sharp texture
    hole = torch.zeros(64, 64, dtype=torch.bool)
    hole[20:44, 8:56] = True
    membrane = harmonic_fill(grain.masked_fill(hole, 0), hole, iters=3000, tol=1e-10)[0, hole]
    plate = biharmonic_fill(grain.masked_fill(hole, 0), hole, iters=3000, tol=1e-10)[0, hole]
    assert float(membrane.min()) >= -1e-9 and float(membrane.max()) <= 1 + 1e-9
    assert float(plate.min()) < -0.01 or float(plate.max()) > 1.01


def test_biharmonic_fill_converges_on_a_big_hole():
    """A 96x96 hole: CG alone stalls (condition ~ width^4); the coarse-level start must
    bring the default 500 steps to a stationary point of the biharmonic energy."""
    y, x = torch.meshgrid(torch.linspace(0, 6, 160), torch.linspace(0, 6, 160), indexing="ij")
    image = (0.5 + 0.25 * torch.sin(x) * torch.cos(1.3 * y))[None].double()
    fill = torch.zeros(160, 160, dtype=torch.bool)
    fill[32:128, 32:128] = True
    observed = image.masked_fill(fill, 0)

    def gradient_norm(z: torch.Tensor) -> float:
        z = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(laplacian_energy(z), z)
        return float(grad[:, fill].norm())

    start = push_pull_fill(observed, fill)
    filled = biharmonic_fill(observed, fill)
    assert gradient_norm(filled) < 1e-3 * gradient_norm(start)
    assert psnr(filled.float(), image.float(), fill) > psnr(start.float(), image.float(), fill) + 5


def _facade(size=96, seed=0):
    """A rank-2 'facade' in [0, 1]: window rows times window columns plus a shading term."""
    g = torch.Generator().manual_seed(seed)
    rows = (
        (torch.arange(size) % 16 < 9).double() * 0.5 + 0.2 + 0.05 * torch.rand(size, generator=g, dtype=torch.float64)
    )
    cols = (torch.arange(size) % 12 < 5).double() * 0.6 + 0.3
    shade = torch.outer(
        torch.linspace(0, 0.2, size, dtype=torch.float64), torch.linspace(0.2, 0, size, dtype=torch.float64)
    )
    return torch.stack([torch.outer(rows, cols) + shade, 0.8 * torch.outer(rows, cols) + 0.5 * shade]).clamp(0, 1)


def test_low_rank_fill_recovers_a_planted_rank_two_image_behind_a_block():
    image = _facade()
    fill = torch.zeros(96, 96, dtype=torch.bool)
    fill[30:60, 40:70] = True
    blanked = image.masked_fill(fill, 0)
    start = biharmonic_fill(blanked, fill)
    rank1, rank2 = low_rank_fills(blanked, fill, start, (1, 2), iters=300)
    assert torch.equal(rank2[:, ~fill], image[:, ~fill])
    assert float((rank2 - image).norm() / image.norm()) < 1e-6 < float((rank1 - image).norm() / image.norm())
    assert psnr(start.float(), image.float(), fill) < 30  # the smooth start could not do it


def test_start_test_runs_on_block_means_of_large_images_and_keeps_its_choice():
    """From 256 px the held-out test runs on 2x2 block means: a blocked mean is zeroed and
    marked missing, a full one is the mean; block means keep a rank-2 facade rank 2, so
    the test still picks a low rank there, and the fill at full size is exact."""
    assert held_out_factor(255, 400) == 1 and held_out_factor(256, 400) == 2
    image = torch.rand(3, 6, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fill = torch.zeros(6, 8, dtype=torch.bool)
    fill[1, 2] = True
    small, small_fill = reduce_masked(image, fill, 2)
    assert small_fill.shape == (3, 4) and small_fill.sum() == 1 and small_fill[0, 1]
    torch.testing.assert_close(small[:, 2, 3], image[:, 4:6, 6:8].mean(dim=(1, 2)))
    assert float(small[:, 0, 1].abs().max()) == 0
    facade = _facade(size=256)
    block = torch.zeros(256, 256, dtype=torch.bool)
    block[96:160, 100:164] = True
    start, details = choose_start(facade.masked_fill(block, 0), block)
    assert details["start"].startswith("rank ") and details["start_test_gain_db"] > 10
    assert psnr(start.float(), facade.float(), block) > 40


def test_choose_start_takes_low_rank_for_a_facade_and_biharmonic_otherwise():
    fill = torch.zeros(96, 96, dtype=torch.bool)
    fill[30:54, 40:64] = True
    facade = _facade()
    start, details = choose_start(facade.masked_fill(fill, 0), fill)
    assert details["start"].startswith("rank ") and details["start_test_gain_db"] > 10
    assert psnr(start.float(), facade.float(), fill) > 40
    field = torch.randn(1, 1, 128, 128, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for _ in range(4):
        field = torch.nn.functional.avg_pool2d(field, 9, 1, 4)
    field = field[0, :, 16:-16, 16:-16]
    smooth = 0.5 + 0.3 * field / field.abs().max()  # a smooth random field: no few rows and columns repeat
    _, details = choose_start(smooth.masked_fill(fill, 0), fill)
    assert details["start"] == "biharmonic" and details["start_test_gain_db"] < 2
    drops = torch.rand(96, 96, generator=torch.Generator().manual_seed(1)) < 0.5  # no wide hole: no test
    start, details = choose_start(facade.masked_fill(drops, 0), drops)
    assert details == {"start": "biharmonic"}
    torch.testing.assert_close(start, biharmonic_fill(facade.masked_fill(drops, 0), drops))
    lines = torch.zeros(96, 96, dtype=torch.bool)  # thin lines with one wide spot (4 % of the missing pixels)
    lines[::12] = lines[:, ::12] = True
    lines[40:49, 40:49] = True
    assert 0 < int(wide_hole(lines, 4).sum()) < 0.1 * int(lines.sum())
    assert choose_start(facade.masked_fill(lines, 0), lines)[1] == {"start": "biharmonic"}
    _, result = inpaint(facade.float().masked_fill(fill, 0), fill, InpaintSettings(start="biharmonic"))
    assert result.details["start"] == "biharmonic" and set(result.details["phase_seconds"]) == {"start", "refine"}


@pytest.mark.parametrize("solver", ["threshold", "adam"])
def test_inpaint_global_model(solver):
    image = _image(1).clamp(0, 1)
    fill = torch.rand(48, 48, generator=torch.Generator().manual_seed(2)) < 0.3
    settings = InpaintSettings(model="global", reg="nuclear", solver=solver, lam=0.5, iters=40)
    out, _ = inpaint(image.masked_fill(fill, 0), fill, settings)
    assert psnr(out, image, fill) > 20


@pytest.mark.parametrize("solver", ["threshold", "adam"])
def test_separate_recovers_planted_background_and_foreground(solver):
    g = torch.Generator().manual_seed(0)
    T, H, W = 20, 16, 16
    background = torch.rand(1, 1, H, W, generator=g) * 0.6 + 0.2
    frames = background.repeat(T, 1, 1, 1) * (1 + 0.02 * torch.randn(T, 1, 1, 1, generator=g))
    truth_mask = torch.zeros(T, H, W, dtype=torch.bool)
    for t in range(T):  # a bright 3x3 square moving across
        truth_mask[t, 6:9, (t % 13) : (t % 13) + 3] = True
    frames[:, 0][truth_mask] = 1.0
    bg, fg, mask, _ = separate(frames, SeparateSettings(solver=solver))
    assert psnr(bg.mean(0), background[0]) > 25
    tp = (mask & truth_mask).sum().item()
    precision, recall = tp / max(mask.sum().item(), 1), tp / truth_mask.sum().item()
    assert 2 * precision * recall / (precision + recall) > 0.8
    torch.testing.assert_close(bg + fg, frames)


@pytest.mark.parametrize("solver", ["threshold", "adam"])
def test_denoise_recovers_a_planted_periodic_image(solver):
    """A 6x6 random tile repeated: every patch recurs exactly, so each centred group of
    similar patches is rank 0 in truth; both solvers must remove most of the noise."""
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 6, 6, generator=g).repeat(1, 8, 8) * 0.6 + 0.2
    noisy = clean + 0.08 * torch.randn(clean.shape, generator=g)
    out, result = denoise(noisy, 0.08, DenoiseSettings(solver=solver, iters=None if solver == "threshold" else 80))
    # measured: 21.9 dB noisy, 36.3 threshold, 32.0 adam
    assert psnr(out, clean) > psnr(noisy, clean) + (12 if solver == "threshold" else 8), psnr(out, clean)
    assert result.metric == ("change" if solver == "threshold" else "loss")


def test_task_settings_share_one_regularizer_factory_and_seed_the_probes():
    reg = SeparateSettings(solver="adam", estimator="stochastic", seed=3).regularizer()
    assert reg.estimator.generator.initial_seed() == 3
    assert InpaintSettings().regularizer().function.penalty.gamma == 1e-3  # inpaint's default gamma
    assert SeparateSettings(reg="laplace").regularizer().function.penalty.gamma == 1.0  # the penalty default
    assert DenoiseSettings(reg="laplace").regularizer().function.penalty.gamma == 1e-3  # denoise default
    InpaintSettings(reg="nuclear").regularizer()  # no gamma forced on a penalty without one


def test_inpaint_settings_resolve_per_solver_defaults_and_refuse_bad_values():
    assert InpaintSettings().resolved().iters == 16 and InpaintSettings(solver="adam").resolved().iters == 200
    assert InpaintSettings(lam=2.0).resolved().lam == 2.0
    for bad in (
        {"solver": "sgd"},
        {"lam": -1.0},
        {"noise_end": 0.0},
        {"patch": 0},
        {"iters": 0},
        {"start": "zeros"},
        {"start_ranks": ()},
        {"start_ranks": (0,)},
        {"start_ranks": (3, 2)},
        {"start_margin": float("nan")},
    ):
        with pytest.raises(LRRError) as error:
            InpaintSettings(**bad)
        assert str(error.value).startswith(error.value.parameter or "start_margin")


@pytest.mark.parametrize("settings_type", [DenoiseSettings, InpaintSettings])
def test_presets_overlay_the_solver_defaults_and_give_way_to_explicit_settings(settings_type):
    default, fast, best = (settings_type(preset=p).resolved() for p in ("default", "fast", "best"))
    assert fast.iters < default.iters and fast.stride > default.stride
    assert best.stride < default.stride or best.iters > default.iters
    assert settings_type(preset="fast", iters=3).resolved().iters == 3  # the user's value wins
    assert settings_type(preset="fast", stride=2).resolved().stride == 2
    for bad, message in (
        ({"preset": "slow"}, "preset must be one of fast, default, best"),
        ({"preset": "fast", "solver": "adam"}, "preset fast does not apply to solver adam"),
    ):
        with pytest.raises(LRRError, match=message) as error:
            settings_type(**bad)
        assert error.value.parameter == "preset"
    assert DenoiseSettings(preset="fast").for_image(3).group == 40  # a preset's group beats the image default
    assert DenoiseSettings().for_image(3).group == 64 and DenoiseSettings().for_image(1).patch == 6


def test_foreground_mask_grows_from_strong_seeds_only():
    g = torch.Generator().manual_seed(0)
    residual = 0.01 * torch.randn(1, 1, 40, 40, generator=g)
    residual[0, 0, 10:20, 10:20] = 0.035  # faint rim, 3.5 noise stds: kept, it touches the core
    residual[0, 0, 13:17, 13:17] = 0.2  # strong core
    residual[0, 0, 30:33, 30:33] = 0.035  # equally faint but isolated: dropped
    mask = foreground_mask(residual)[0]
    assert mask[10:20, 10:20].all() and not mask[30:33, 30:33].any()
    assert mask.sum() < 100 + 15  # a few noise pixels at most


@pytest.mark.parametrize("shape", [(3, 7, 9), (1, 2, 2), (2, 1, 5)])
def test_laplacian_adjoint_in_closed_form_matches_autograd(shape):
    from lrrtool.tasks.starts import _laplacian, _laplacian_adjoint

    y = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad((_laplacian(x) * y).sum(), x)
    torch.testing.assert_close(_laplacian_adjoint(y), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("corner", [(0, 0), (9, 11), (14, 17)])
def test_biharmonic_fill_on_the_hole_window_solves_the_whole_image_system(corner):
    """CG runs on the hole's bounding box grown by 2 px: the minimiser must be the one of
    the whole image's biharmonic energy (dense solve), at the border and inside."""
    from lrrtool.tasks.starts import _laplacian

    H, W = 20, 24
    g = torch.Generator().manual_seed(5)
    image = torch.rand(1, H, W, generator=g, dtype=torch.float64)
    fill = torch.zeros(H, W, dtype=torch.bool)
    fill[corner[0] : corner[0] + 5, corner[1] : corner[1] + 6] = True
    basis = torch.eye(H * W, dtype=torch.float64).reshape(H * W, 1, H, W)
    delta = torch.stack([_laplacian(b).flatten() for b in basis], 1)  # (HW, HW): column j = Laplacian of e_j
    A, free = delta.T @ delta, fill.flatten()
    y = image.flatten().masked_fill(free, 0)
    expected = y.clone()
    expected[free] = torch.linalg.solve(A[free][:, free], -(A[free] @ y))
    filled = biharmonic_fill(image.masked_fill(fill, 0), fill, iters=2000, tol=1e-13)
    torch.testing.assert_close(filled.flatten(), expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("shape", [(17, 23), (6, 5), (1, 9)])
def test_sparse_normal_matrix_is_the_dense_operator_on_the_free_pixels(shape, order):
    """The smooth fills' sparse CG matrix: on scattered free pixels that touch every border,
    ``A u`` is the operator (``-Delta`` for order 1, ``Delta^T Delta`` for 2; replicate
    borders) applied to ``u`` placed on the free pixels, read there; and ``A`` is symmetric."""
    from lrrtool.tasks.starts import _laplacian, _laplacian_adjoint, _normal_matrix

    g = torch.Generator().manual_seed(3)
    free = torch.rand(shape, generator=g) < 0.45
    free[0, 0] = free[-1, -1] = True
    u = torch.randn(int(free.sum()), 2, generator=g, dtype=torch.float64)
    placed = torch.zeros(2, *shape, dtype=torch.float64)
    placed[:, free] = u.T
    matrix = _normal_matrix(free, torch.float64, order)
    expected = (-_laplacian(placed) if order == 1 else _laplacian_adjoint(_laplacian(placed)))[:, free].T
    torch.testing.assert_close(matrix @ u, expected, rtol=0, atol=1e-12)
    dense = matrix.to_dense()
    assert torch.equal(dense, dense.T)


def test_each_channel_of_a_biharmonic_fill_is_solved_to_its_own_tolerance():
    """Channels of very different contrast: each stops on its own residual, so a colour
    fill is the fill of each channel alone, and the faint channel is not left unsolved
    because the strong one dominated a joint residual."""
    g = torch.Generator().manual_seed(2)
    y, x = torch.meshgrid(torch.linspace(0, 4, 64), torch.linspace(0, 4, 64), indexing="ij")
    image = torch.stack([torch.sin(x + y), 1e-3 * torch.cos(2 * x - y), 0.2 * x])[:, :, :].double()
    fill = torch.rand(64, 64, generator=g) < 0.3
    fill[20:40, 24:30] = True
    together = biharmonic_fill(image.masked_fill(fill, 0), fill)
    for c in range(3):
        alone = biharmonic_fill(image[c : c + 1].masked_fill(fill, 0), fill)
        torch.testing.assert_close(together[c : c + 1], alone, rtol=0, atol=1e-12)
    assert float((together - image)[1, fill].abs().max()) < 2e-4  # the faint channel is filled too


def test_hole_masks_get_the_hole_settings_and_scattered_drops_do_not():
    """``has_holes``: strokes 3 px wide are holes, a 30 % random drop is not; an image
    inpainting with holes runs ``hole_defaults`` (said in its details) except where the
    user set a value, one with drops and a clip run the defaults."""
    from lrrtool.tasks.inpaint import has_holes

    g = torch.Generator().manual_seed(4)
    image = torch.rand(3, 40, 44, generator=g)
    drops = torch.rand(40, 44, generator=g) < 0.3
    strokes = torch.zeros(40, 44, dtype=torch.bool)
    strokes[10:13, 4:40] = strokes[20:36, 30:33] = True
    assert has_holes(strokes) and not has_holes(drops)
    _, result = inpaint(image, strokes, InpaintSettings(iters=2))
    assert result.details["hole_settings"] == InpaintSettings.hole_defaults
    _, result = inpaint(image, strokes, InpaintSettings(iters=2, lam=3.0))
    assert result.details["hole_settings"]["lam"] == 3.0 and result.details["hole_settings"]["patch"] == 6
    _, result = inpaint(image, drops, InpaintSettings(iters=2))
    assert "hole_settings" not in result.details
    _, result = inpaint(image[None].expand(3, -1, -1, -1), strokes, InpaintSettings(iters=2))
    assert "hole_settings" not in result.details
