"""Separation at full resolution: solve small and lift, the mask rule, streaming pieces."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lrrtool.errors import LRRError
from lrrtool.media import read_image
from lrrtool.video import POOR_FIT_SPREAD, SeparateSettings, separate_chunks
from lrrtool.video.lift import LiftedSolve, block_mean, combine, robust_fit, temporal_components, working_size
from lrrtool.video.mask import _dilate, _spread, noise_levels, residual_mask

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def f_measure(mask: torch.Tensor, truth: torch.Tensor) -> float:
    tp = float((mask & truth).sum())
    if tp == 0:
        return 0.0
    precision, recall = tp / float(mask.sum()), tp / float(truth.sum())
    return 2 * precision * recall / (precision + recall)


def planted_clip(frames=40, height=96, width=128, dimming=True, noise=2 / 255, seed=0):
    """The bundled facade as a colour background, lit by a slow drift and (``dimming``) an
    18 % drop over 6 frames; three real patches of the bundled photo moving across it;
    uint8 frames ``(T, 3, H, W)``, the truth mask and the clean lit background."""
    g = torch.Generator().manual_seed(seed)
    background = F.interpolate(read_image(SAMPLES / "facade.jpg")[None], (height, width), mode="area")[0]
    source = read_image(SAMPLES / "photo.jpg")
    patches = [source[:, 40:56, 200:220], source[:, 150:164, 60:78], source[:, 220:238, 120:134]]
    t = torch.arange(frames, dtype=torch.float32)
    gain = 1 + 0.03 * torch.sin(t / 7)
    if dimming:
        gain = gain * (1 - 0.18 * ((t - frames // 2) / 6).clamp(0, 1))
    clean = background[None] * gain.view(-1, 1, 1, 1)
    video = clean.clone()
    truth = torch.zeros(frames, height, width, dtype=torch.bool)
    for k, patch in enumerate(patches):
        ph, pw = patch.shape[1:]
        for i in range(frames):
            y = int((10 + 28 * k + i * (k + 1)) % (height - ph))
            x = int((i * (2 + k) + 37 * k) % (width - pw))
            video[i, :, y : y + ph, x : x + pw] = patch * gain[i]
            truth[i, y : y + ph, x : x + pw] = True
    video = video + noise * torch.randn(video.shape, generator=g)
    return video.clamp(0, 1).mul(255).round().to(torch.uint8), truth, clean


def run(video, **settings):
    parts = list(separate_chunks([video], SeparateSettings(**settings)))
    return parts[0]


def test_lifted_separation_matches_the_full_size_solve_on_a_planted_clip():
    """The issue's bar: the lift loses at most 0.01 F-measure against the full-size solve.
    Measured here: full 0.9954, lifted (working copy 32x24, a 16th of the pixels) 0.9910;
    background error away from the patches 0.54/255."""
    video, truth, clean = planted_clip()
    full = run(video, work_pixels=0)
    lifted = run(video, work_pixels=32 * 24)
    assert full.components is None and lifted.components == 1  # the dimming is rank one in time
    f_full, f_lifted = f_measure(full.mask, truth), f_measure(lifted.mask, truth)
    assert f_full > 0.9 and f_lifted >= f_full - 0.01, (f_full, f_lifted)
    background = lifted.background.float() / 255
    away = ~truth[:, None].expand_as(background)  # the background where no patch covers it
    assert (background - clean)[away].abs().mean() < 2 / 255


def test_lifted_background_follows_a_sudden_dimming():
    """Frames after the 18 % drop: the lifted background is dimmed too (not the mean level),
    so the mask does not flood on the dimmed frames."""
    video, truth, clean = planted_clip()
    part = run(video, work_pixels=32 * 24)
    late = slice(30, 40)
    dimmed = clean[late].mean()
    assert abs(float(part.background[late].float().mean() / 255) - float(dimmed)) < 0.01
    covered = part.mask[late].flatten(1).float().mean(1)
    allowed = 2 * truth[late].flatten(1).float().mean(1) + 0.01
    assert bool((covered <= allowed).all()), (covered, allowed)


def test_robust_fit_ignores_outliers_that_least_squares_follows():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(60, 2, generator=g, dtype=torch.float64))[0]
    coefficients = torch.randn(2, 500, generator=g, dtype=torch.float64)
    clean = basis @ coefficients
    outliers = torch.rand(60, 500, generator=g) < 0.2
    values = clean + outliers * (0.5 + torch.rand(60, 500, generator=g, dtype=torch.float64))
    fitted = robust_fit(values, basis, steps=30, floor=1e-6)
    least_squares = basis @ (basis.T @ values)
    assert (basis @ fitted - clean).abs().max() < 1e-3
    assert (least_squares - clean).abs().max() > 0.1


def test_robust_fit_rank_one_is_the_weighted_median():
    """For one component with b_t = 1 the L1 fit is the median of each series."""
    g = torch.Generator().manual_seed(1)
    values = torch.rand(31, 40, generator=g, dtype=torch.float64)
    basis = torch.ones(31, 1, dtype=torch.float64) / 31**0.5
    fitted = (basis @ robust_fit(values, basis, steps=200, floor=1e-9))[0]
    torch.testing.assert_close(fitted, values.median(dim=0).values, atol=1e-4, rtol=0)


def test_temporal_components_match_the_svd():
    g = torch.Generator().manual_seed(2)
    low_rank = (torch.randn(30, 2, generator=g) * torch.tensor([5.0, 1.0])) @ torch.randn(2, 400, generator=g)
    basis = temporal_components(low_rank.reshape(30, 1, 20, 20))
    U = torch.linalg.svd(low_rank.double(), full_matrices=False)[0][:, :2]
    assert basis.shape == (30, 2)
    torch.testing.assert_close((basis.double().T @ U).abs(), torch.eye(2, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_block_mean_is_average_pooling(dtype):
    g = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (20, 3, 37, 50), generator=g, dtype=torch.uint8)
    given = frames if dtype == torch.uint8 else frames.float() / 255
    expected = F.avg_pool2d(frames[:, :, :36, :48].double() / 255, 4)
    torch.testing.assert_close(block_mean(given, 4, torch.float64), expected, atol=1e-6, rtol=0)


def test_working_size_keeps_aspect_with_an_integer_factor():
    assert working_size(720, 1280, 128 * 72) == (72, 128)
    assert working_size(1080, 1920, 128 * 72) == (72, 128)
    assert working_size(144, 192, 128 * 72) == (72, 96)
    assert working_size(60, 80, 128 * 72) == (60, 80)  # small frames are solved as they are
    assert working_size(720, 1280, 0) == (720, 1280)


def test_dilate_equals_max_pooling():
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(3, 17, 23, generator=g) > 0.9
    expected = F.max_pool2d(mask[:, None].float(), 3, 1, 1)[:, 0] > 0
    assert torch.equal(_dilate(mask), expected)


@pytest.mark.parametrize(
    "cells, size", [((6, 10), (720, 1280)), ((1, 4), (9, 31)), ((3, 1), (40, 7)), ((5, 5), (5, 5))]
)
def test_spread_is_bilinear_interpolation(cells, size):
    levels = torch.rand(2, *cells, generator=torch.Generator().manual_seed(1))
    expected = F.interpolate(levels[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(_spread(levels, torch.Size((2, *size))), expected, atol=1e-6, rtol=0)


def noise_map(residual: torch.Tensor) -> torch.Tensor:
    """The noise levels of ``residual`` ``(T, H, W)`` spread over its frames, as the mask rule spreads them."""
    levels = noise_levels(residual)[:, None]
    return F.interpolate(levels, size=tuple(residual.shape[1:]), mode="bilinear", align_corners=False)[:, 0]


def test_noise_map_is_per_frame_and_per_region():
    """Frame 1 is three times as noisy, and in frame 0 the right half is: the estimate
    follows both (within 15 %)."""
    g = torch.Generator().manual_seed(5)
    sigma = torch.full((2, 96, 128), 0.01)
    sigma[1] = 0.03
    sigma[0, :, 64:] = 0.02
    residual = (sigma * torch.randn(2, 96, 128, generator=g)).abs()
    level = noise_map(residual)
    assert abs(float(level[1].mean()) / 0.03 - 1) < 0.15
    assert abs(float(level[0, :, :40].mean()) / 0.01 - 1) < 0.15
    assert abs(float(level[0, :, 90:].mean()) / 0.02 - 1) < 0.15


def test_an_object_that_fills_quiet_regions_for_a_while_is_found():
    """A quiet area (noise 2/255, a clear sky; the rest 8/255) filled by an object with a
    residual of 40/255 for 10 of 40 frames, as the hand in ``tree.avi``. Capped only at
    twice its frame's level, the filled regions read 16/255 and seed at 64/255: recall
    0.15. Capped also by their own median over the chunk, they read the frame's 8/255:
    the object is found whole, and the mask stays within it."""
    g = torch.Generator().manual_seed(7)
    sigma = torch.full((40, 96, 128), 8 / 255)
    sigma[:, :, 96:] = 2 / 255
    residual = (sigma * torch.randn(sigma.shape, generator=g)).abs()
    truth = torch.zeros(residual.shape, dtype=torch.bool)
    truth[30:, 4:60, 100:126] = True
    residual[truth] = (40 / 255 + 2 / 255 * torch.randn(int(truth.sum()), generator=g)).abs()
    mask = residual_mask(residual)
    hit = float((mask & truth).sum())
    assert hit / float(truth.sum()) > 0.95 and hit / float(mask.sum()) > 0.95


def test_a_noisier_frame_does_not_flood_the_mask():
    """One frame with far more noise (sigma 8/255 added; a compressed key frame): with one
    noise level per chunk its mask covered 44 % of it (truth 6.7 %); per frame and region
    it covers 6.1 %, within 2x the truth + 1 %."""
    video, truth, _ = planted_clip(dimming=False)
    noisy = video.clone()
    g = torch.Generator().manual_seed(6)
    noisy[0] = (video[0].float() + 8 * torch.randn(video[0].shape, generator=g)).clamp(0, 255).round().to(torch.uint8)
    part = run(noisy, work_pixels=32 * 24)
    assert float(part.mask[0].float().mean()) <= 2 * float(truth[0].float().mean()) + 0.01


def test_a_panning_camera_is_reported_as_a_poor_fit():
    """Frames cut from a wider image at a shift of 4 px per frame: the background needs
    many temporal components (its energy spreads), and the chunk says so; the still clip
    with a sudden dimming does not."""
    image = F.interpolate(read_image(SAMPLES / "facade.jpg")[None], (96, 288), mode="area")[0]
    video = torch.stack([image[:, :, 4 * t : 4 * t + 128] for t in range(30)])
    moving = run((video * 255).round().to(torch.uint8), work_pixels=32 * 24)
    still, _, _ = planted_clip(frames=30)
    assert moving.spread > max(POOR_FIT_SPREAD, 0.02)  # measured 0.030
    assert all(run(still, work_pixels=pixels).spread <= POOR_FIT_SPREAD for pixels in (32 * 24, 0))


def test_chunks_carry_a_full_size_background_and_stream_uint8():
    video, truth, _ = planted_clip(frames=40)
    parts = list(separate_chunks(video.split(20), SeparateSettings(work_pixels=32 * 24)))
    assert [p.background.dtype for p in parts] == [torch.uint8, torch.uint8]
    masks = torch.cat([p.mask for p in parts])
    assert f_measure(masks, truth) > 0.9


def test_a_fade_is_the_weighted_sum_of_two_fits_in_every_view():
    """``fade_from``: frame ``t < L`` is ``a_t`` times this fit plus ``1 - a_t`` times the
    other, ``a_t = (t + 1) / (L + 1)``, in the background, in any slice and in the residuals
    (also subsampled); the handover is this fit's own rows, unweighted."""
    g = torch.Generator().manual_seed(0)
    T, L = 12, 5
    basis, coefficients = torch.randn(T, 2, generator=g), torch.randn(2, 3, 8, 10, generator=g)
    rows, previous = torch.randn(L, 3, generator=g), torch.randn(3, 3, 8, 10, generator=g)
    lifted = LiftedSolve(basis, coefficients, 1.0, torch.zeros(T, 3, 4, 5), None, 0.0)
    lifted.fade_from(rows, previous)
    a = (torch.arange(1, L + 1) / (L + 1)).view(-1, 1, 1, 1)
    own = combine(basis, coefficients)
    expected = own.clone()
    expected[:L] = a * own[:L] + (1 - a) * combine(rows, previous)
    torch.testing.assert_close(lifted.fit(0, T), expected)
    torch.testing.assert_close(lifted.fit(3, 9), expected[3:9])
    frames = torch.rand(T, 3, 8, 10, generator=g)
    for step in (1, 2):
        residual = torch.cat(list(lifted.residuals(frames, batch=4, step=step)))
        torch.testing.assert_close(residual, (frames - expected)[:, :, ::step, ::step].abs().amax(1))
    handed_rows, handed = lifted.handover(9, 12)
    assert torch.equal(handed_rows, basis[9:12]) and handed is coefficients
    with pytest.raises(LRRError, match="after its own fade"):
        lifted.handover(2, 12)


@pytest.mark.parametrize(("work_pixels", "size"), [(32 * 24, (96, 128)), (0, (72, 96))])
def test_chunk_borders_fade_in_without_a_step(work_pixels, size):
    """90 frames in chunks of 15. Each chunk solved alone steps the background at its
    borders (measured, lifted: up to 4.6 times the median frame-to-frame change; robust PCA
    at full size, on a smaller clip to keep the test short: 3.0 times); with each chunk
    also solving 7 frames of the next, over which the next fades in, no border jumps more
    than twice the median (1.43; 1.32 times), and the mask is no worse (F 0.944 -> 0.977;
    0.984 -> 0.986)."""
    video, truth, _ = planted_clip(frames=90, dimming=False, height=size[0], width=size[1])

    def separated(lookahead: int) -> tuple[torch.Tensor, float]:
        chunks = [(video[s : s + 15 + lookahead], min(15, 90 - s)) for s in range(0, 90, 15)]
        parts = list(separate_chunks(chunks, SeparateSettings(work_pixels=work_pixels)))
        background = torch.cat([p.background_frames() for p in parts]).float()
        background = background if background.max() > 1 else background * 255
        assert background.shape == video.shape
        jumps = (background[1:] - background[:-1]).abs().mean(dim=(1, 2, 3))
        return jumps, f_measure(torch.cat([p.mask for p in parts]), truth)

    borders = [14, 29, 44, 59, 74]
    stepped, stepped_f = separated(0)
    faded, faded_f = separated(7)
    assert float(stepped[borders].max()) > 2 * float(stepped.median()), stepped
    assert float(faded[borders].max()) <= 2 * float(faded.median()), faded
    assert faded_f >= stepped_f - 0.005 and faded_f > 0.9


def test_warm_up_chunks_carry_what_they_would_and_are_not_yielded():
    """``carry_only=2``: the first two chunks make no mask and are not yielded, and the
    chunks after them come out exactly as in the run that yields all."""
    video, _, _ = planted_clip(frames=60)
    chunks = [(video[s : s + 15 + 7], min(15, 60 - s)) for s in range(0, 60, 15)]
    settings = SeparateSettings(work_pixels=32 * 24)
    every = list(separate_chunks(chunks, settings))
    after = list(separate_chunks(chunks, settings, carry_only=2))
    assert [p.index for p in after] == [2, 3]
    for mine, theirs in zip(after, every[2:], strict=True):
        assert torch.equal(mine.mask, theirs.mask) and torch.equal(mine.background, theirs.background)


def test_foreground_layer_is_the_frames_under_the_mask_and_black_elsewhere():
    video, _, _ = planted_clip(frames=20)
    part = run(video, work_pixels=32 * 24)
    layer = part.foreground_layer(3, 9)
    assert layer.dtype == torch.uint8 and layer.shape == video[3:9].shape
    inside = part.mask[3:9, None].expand_as(layer)
    assert torch.equal(layer[inside], video[3:9][inside]) and not layer[~inside].any()
    assert inside.any() and (~inside).any()


def test_lifted_chunk_makes_its_background_on_demand_batch_by_batch():
    """The lifted chunk stores coefficients, not frames; any slice of its background equals
    the same slice of the whole, and the carried frames follow from it."""
    video, _, _ = planted_clip(frames=30)
    part = run(video, work_pixels=32 * 24)
    whole = part.background
    assert whole.shape == video.shape and whole.dtype == torch.uint8
    assert torch.equal(part.background_frames(7, 19), whole[7:19])
    assert part.lifted.coefficients.shape == (1, 3, 96, 128)
    whole_residual = torch.cat(list(part.lifted.residuals(video)))  # the sampled noise levels agree
    torch.testing.assert_close(part.lifted.noise_levels(video), noise_levels(whole_residual))


def test_residual_mask_grows_seeds_into_connected_candidates():
    residual = torch.zeros(1, 40, 40)
    residual[0, 10:12, 10:12] = 0.5  # a seed
    residual[0, 12:20, 10:12] = 0.015  # a weaker tail connected to it
    residual[0, 30:34, 30:34] = 0.015  # the same weak level, not connected
    residual += 0.004
    mask = residual_mask(residual)
    assert bool(mask[0, 10:20, 10:12].all()) and not bool(mask[0, 30:34, 30:34].any())


# ------------------------------------------------------------------ command line


def write_clip(path: Path, video: torch.Tensor) -> Path:
    """Frames ``(T, 3, H, W)`` uint8 as a folder of PNGs (lossless, so the truth holds)."""
    from PIL import Image

    path.mkdir()
    for t, frame in enumerate(video):
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(path / f"{t:03d}.png")
    return path


def test_cli_writes_only_the_videos_asked_for_and_reports_speed_and_memory(tmp_path):
    import json

    from typer.testing import CliRunner

    from lrrtool.cli import app

    video, _, _ = planted_clip(frames=24)
    clip = write_clip(tmp_path / "clip", video)
    out, report = tmp_path / "out", tmp_path / "r.json"
    args = ["separate", str(clip), "--output-dir", str(out), "--outputs", "mask", "--work-pixels", "768"]
    result = CliRunner().invoke(app, [*args, "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["mask.mp4"]
    entry = json.loads(report.read_text())
    assert entry["frames"] == 24 and entry["frame_size"] == [128, 96] and entry["outputs"] == ["mask"]
    assert entry["fps"] > 0 and entry["peak_memory_gib"] > 0 and entry["warnings"] == []
    assert entry["settings"]["work_pixels"] == 768 and entry["chunks"][0]["components"] == 1
    assert "fps" in result.output and "peak memory" in result.output
    bad = CliRunner().invoke(app, ["separate", str(clip), "--output-dir", str(tmp_path / "o2"), "--outputs", "masks"])
    assert bad.exit_code == 1 and "outputs must be some of background, foreground, mask" in bad.output
    assert not (tmp_path / "o2").exists()


def test_cli_warns_when_the_camera_moves(tmp_path):
    from typer.testing import CliRunner

    from lrrtool.cli import app

    image = F.interpolate(read_image(SAMPLES / "facade.jpg")[None], (96, 288), mode="area")[0]
    video = (torch.stack([image[:, :, 4 * t : 4 * t + 128] for t in range(30)]) * 255).round().to(torch.uint8)
    clip = write_clip(tmp_path / "pan", video)
    result = CliRunner().invoke(
        app, ["separate", str(clip), "--output-dir", str(tmp_path / "out"), "--outputs", "mask"]
    )
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "moving camera" in result.output


def test_components_limit_keeps_a_stopped_object_in_the_foreground():
    """An object still for 24 of 60 frames is a second temporal component; the automatic
    rule keeps it as background, ``components=1`` keeps it foreground."""
    video, _, _ = planted_clip(frames=60, dimming=False)
    still = torch.zeros(60, 96, 128, dtype=torch.bool)
    still[18:42, 40:70, 50:90] = True
    video[18:42, :, 40:70, 50:90] = torch.tensor([250, 20, 20], dtype=torch.uint8).view(3, 1, 1)
    auto = run(video, work_pixels=32 * 24)
    one = run(video, work_pixels=32 * 24, components=1)
    recall = lambda part: float((part.mask & still).sum() / still.sum())  # noqa: E731
    assert auto.components >= 2 and recall(auto) < 0.1
    assert one.components == 1 and recall(one) > 0.95
    with pytest.raises(LRRError, match="work_pixels 0"):
        SeparateSettings(work_pixels=0, components=1).resolved()


@pytest.mark.parametrize("pixels", [0, 32 * 24, 10**6])
def test_float_frames_given_are_left_unchanged(pixels):
    """A float chunk is worked on in place nowhere (a lifted residual once was)."""
    video, _, _ = planted_clip(frames=12)
    frames = video.float() / 255
    before = frames.clone()
    part = run(frames, work_pixels=pixels)
    assert torch.equal(frames, before) and part.mask.shape == (12, 96, 128)
