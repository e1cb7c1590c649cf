"""`lrrtool denoise`: planted truth, a real sample in grey and colour, and bad input."""

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_clean_failure, snapshot
from PIL import Image
from typer.testing import CliRunner

from lrrtool import media
from lrrtool.cli import app
from lrrtool.metrics import psnr
from lrrtool.patches import PatchGroups
from lrrtool.tasks.denoise import DenoiseSettings, denoise, estimate_clip_sigma, estimate_sigma, remaining_noise

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
runner = CliRunner()


def test_remaining_noise_is_local_to_each_group():
    g = torch.Generator().manual_seed(0)
    noisy = torch.rand(1, 32, 32, generator=g)
    current = noisy.clone()
    current[:, :, 16:] += 0.1  # the right half has had 0.1^2 of energy removed, the left none
    groups = PatchGroups(noisy, patch=4, group=3, stride=4, window=4, search_step=1)
    level = remaining_noise(noisy, current, 0.2, groups, rescale=0.5)
    column = groups.index % (32 - 4 + 1)  # (G, K) left column of every member patch
    left = (column + 4 <= 16).all(dim=1)  # every patch of the group wholly in the left half
    right = (column >= 16).all(dim=1)
    assert left.any() and right.any()
    assert torch.allclose(level[left], torch.tensor(0.5 * 0.2))
    assert torch.allclose(level[right], torch.tensor(0.5 * (0.2**2 - 0.1**2) ** 0.5))


def test_planted_self_similar_image_groups_are_low_rank_and_denoised():
    g = torch.Generator().manual_seed(0)
    tile = torch.rand(1, 8, 8, generator=g)
    clean = tile.repeat(1, 6, 6)  # 48x48, every 5x5 patch repeats exactly
    # Block matching finds the planted copies: every group of 4 is one patch repeated (rank 0 once centred).
    groups = PatchGroups(clean, patch=5, group=4, stride=4, window=8, search_step=1).gather(clean)
    assert float((groups - groups.mean(dim=1, keepdim=True)).abs().max()) < 1e-6
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    out, _ = denoise(noisy, 0.1)
    assert psnr(out, clean) > psnr(noisy.clamp(0, 1), clean) + 8


@pytest.fixture(scope="module")
def photo():
    return media.read_image(SAMPLES / "photo.jpg")[:, 100:196, 100:196]


@pytest.mark.parametrize("grey", [True, False])
def test_real_sample_improves_in_grey_and_colour(photo, grey):
    clean = photo.mean(0, keepdim=True) if grey else photo
    g = torch.Generator().manual_seed(1)
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=g)
    out, result = denoise(noisy, 25 / 255)
    assert out.shape == clean.shape and result.iterations == DenoiseSettings().resolved().iters
    assert psnr(out, clean) > psnr(noisy.clamp(0, 1), clean) + 5
    assert abs(estimate_sigma(noisy) * 255 - 25) < 6


def test_a_clips_noise_is_estimated_past_its_black_frames(photo):
    """A clip that opens on black frames (noise clipped away) is estimated on its other
    frames: its first frame alone says almost no noise."""
    g = torch.Generator().manual_seed(0)
    frames = photo[None].expand(6, -1, -1, -1).clone()
    frames[:4] = 0
    noisy = (frames + torch.randn(frames.shape, generator=g) * 20 / 255).clamp(0, 1)
    on_the_photo = estimate_sigma(noisy[5])
    assert estimate_sigma(noisy[0]) < 0.7 * on_the_photo
    assert estimate_clip_sigma(noisy) == pytest.approx(on_the_photo, rel=0.05)


def test_cli_colour_with_reference_and_auto_sigma(tmp_path, photo):
    g = torch.Generator().manual_seed(2)
    media.write_image(tmp_path / "clean.png", photo)
    media.write_image(tmp_path / "noisy.png", (photo + 20 / 255 * torch.randn(photo.shape, generator=g)).clamp(0, 1))
    result = runner.invoke(
        app,
        [
            "denoise",
            str(tmp_path / "noisy.png"),
            "--sigma",
            "auto",
            "--reference",
            str(tmp_path / "clean.png"),
            "--report",
            str(tmp_path / "r.json"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    entry = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert entry["sigma_estimated"] and 10 < entry["sigma_255"] < 30
    assert entry["metrics"]["psnr"] > entry["metrics"]["psnr_input"] + 3
    assert Image.open(tmp_path / "noisy.denoised.png").mode == "RGB"


@pytest.mark.parametrize(
    "args, message",
    [
        (["corrupt.png", "--sigma", "10"], "not a readable image"),
        (["noisy.png", "--sigma", "0"], "--sigma must be in (0, 255)"),
        (["noisy.png", "--sigma", "ten"], "--sigma"),
        (["noisy.png", "--sigma", "10", "--reg", "frobenius"], "frobenius"),
        (["noisy.png", "--sigma", "10", "-o", "noisy.png"], "refusing to overwrite an input"),
    ],
)
def test_cli_bad_input(tmp_path, photo, args, message):
    media.write_image(tmp_path / "noisy.png", photo)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG but not really")
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["denoise", *[str(tmp_path / a) if a.endswith(".png") else a for a in args], "-q"])
    assert_clean_failure(result, message, tmp_path, before)


def test_cli_existing_default_output_is_skipped_and_said_unless_overwrite(tmp_path, photo):
    media.write_image(tmp_path / "noisy.png", photo[:, :32, :32])
    target = tmp_path / "noisy.denoised.png"
    target.write_bytes(b"an older result")
    args = [
        "denoise",
        str(tmp_path / "noisy.png"),
        "--sigma",
        "10",
        "--iters",
        "1",
        "--report",
        str(tmp_path / "r.json"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skip" in result.output and "--overwrite" in result.output
    assert target.read_bytes() == b"an older result"
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["skipped"] is True
    result = runner.invoke(app, [*args, "--overwrite", "-q"])
    assert result.exit_code == 0, result.output
    assert Image.open(target).size == (32, 32)
