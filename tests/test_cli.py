"""The command line, driven through typer's runner on real files."""

import json
import shutil
from pathlib import Path

import pytest
from helpers import assert_clean_failure, snapshot
from PIL import Image
from typer.testing import CliRunner

from lrrtool import __version__
from lrrtool.cli import app

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def small(tmp_path):
    """A 64x64 crop of the bundled photo and a block mask (white = fill)."""
    image = Image.open(SAMPLES / "photo.jpg").crop((100, 100, 164, 164))
    image.save(tmp_path / "photo.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 36, 36))
    mask.save(tmp_path / "mask.png")
    return tmp_path


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("inpaint", "separate", "denoise"):
        assert command in result.output


def test_inpaint_writes_output_report_and_keeps_input(small):
    before = (small / "photo.png").read_bytes()
    result = invoke(
        "inpaint",
        small / "photo.png",
        "--mask",
        small / "mask.png",
        "--iters",
        20,
        "--reference",
        small / "photo.png",
        "--report",
        small / "r.json",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    out = small / "photo.inpainted.png"
    assert out.exists() and (small / "photo.png").read_bytes() == before
    report = json.loads((small / "r.json").read_text())
    entry = report["results"][0]
    assert entry["output"] == str(out) and entry["iterations"] >= 1 and entry["metrics"]["psnr"] > 25
    assert entry["start"] == "biharmonic" and entry["start_test_gain_db"] < 2  # a 16 px hole in a photo
    # observed pixels are unchanged in the file
    a, b = Image.open(out).convert("RGB"), Image.open(small / "photo.png").convert("RGB")
    assert a.getpixel((5, 5)) == b.getpixel((5, 5)) and a.getpixel((60, 60)) == b.getpixel((60, 60))


def test_inpaint_facade_block_starts_from_low_rank_and_beats_biharmonic_start(tmp_path):
    Image.open(SAMPLES / "facade.jpg").crop((100, 100, 220, 220)).save(tmp_path / "facade.png")
    mask = Image.new("L", (120, 120), 0)
    mask.paste(255, (45, 45, 75, 75))
    mask.save(tmp_path / "block.png")
    psnr_missing = {}
    for start in ("auto", "biharmonic"):
        report = tmp_path / f"{start}.json"
        args = ("--start", start, "--reference", tmp_path / "facade.png", "--report", report, "--quiet")
        result = invoke(
            "inpaint", tmp_path / "facade.png", "--mask", tmp_path / "block.png", "-o", tmp_path / f"{start}.png", *args
        )
        assert result.exit_code == 0, result.output
        entry = json.loads(report.read_text())["results"][0]
        assert entry["start"].startswith("rank ") if start == "auto" else entry["start"] == "biharmonic"
        psnr_missing[start] = entry["metrics"]["psnr_missing"]
    assert psnr_missing["auto"] > psnr_missing["biharmonic"] + 3, psnr_missing


def test_inpaint_glob_with_output_dir_and_drop(small):
    shutil.copy(small / "photo.png", small / "second.png")
    result = invoke(
        "inpaint",
        str(small / "*.png"),
        "--drop",
        0.3,
        "--output-dir",
        small / "out",
        "--iters",
        10,
        "--reg",
        "nuclear",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in (small / "out").iterdir()} == {
        "mask.inpainted.png",
        "photo.inpainted.png",
        "second.inpainted.png",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.png", "--mask", "mask.png"], "no such file"),
        (["corrupt.png", "--mask", "mask.png"], "not a readable image"),
        (["photo.png", "--mask", "wrongsize.png"], "mask is 10x12 but the image is 64x64"),
        (["photo.png", "--mask", "empty.png"], "marks no pixel to fill"),
        (["photo.png", "--mask", "mask.png", "-o", "photo.png"], "refusing to overwrite an input"),
        (["photo.png", "--mask", "mask.png", "--reg", "frobenius"], "frobenius"),
        (["photo.png", "--mask", "mask.png", "--lam", "-1"], "--lam must be >= 0"),
        (["photo.png", "--mask", "mask.png", "--solver", "adam", "--lr", "1e30"], "--lr must be in (0, 1]"),
        (
            ["photo.png", "--mask", "mask.png", "--solver", "adam", "--lr", "1", "--iters", "30"],
            "lower the learning rate",
        ),
        (["photo.png", "--mask", "mask.png", "--lr", "0.1"], "--lr does not apply to solver threshold"),
        (["photo.png", "--mask", "mask.png", "--solver", "newton"], "Invalid value for '--solver'"),
        (["photo.png", "--mask", "mask.png", "--start", "zeros"], "Invalid value for '--start'"),
        (["photo.png"], "exactly one of --mask"),
        (["photo.png", "--mask", "mask.png", "--reg", "laplace", "--gamma", "-2"], "--gamma must be"),
    ],
)
def test_inpaint_bad_input_one_line_error_and_inputs_untouched(small, args, message):
    (small / "corrupt.png").write_bytes(b"not a png at all")
    Image.new("L", (10, 12), 255).save(small / "wrongsize.png")
    Image.new("L", (64, 64), 0).save(small / "empty.png")
    before = snapshot(small)
    result = runner.invoke(app, ["inpaint", *[str(small / a) if a.endswith(".png") else a for a in args], "-q"])
    assert_clean_failure(result, message, small, before)


def test_inpaint_resize_mask_and_invert(small):
    """A half-size mask, black = fill: with --invert-mask only the resized black square is
    filled; without it, nearly the whole image would be, and a pixel far from the square changes."""
    mask = Image.new("L", (32, 32), 255)
    mask.paste(0, (10, 10, 16, 16))
    mask.save(small / "half.png")
    args = ["inpaint", small / "photo.png", "--mask", small / "half.png", "--resize-mask", "--iters", 5, "-q"]
    result = invoke(*args, "--invert-mask", "-o", small / "x.png", "--report", small / "x.json")
    assert result.exit_code == 0, result.output
    assert json.loads((small / "x.json").read_text())["results"][0]["missing_fraction"] == (12 * 12) / 64**2
    original, inverted = Image.open(small / "photo.png"), Image.open(small / "x.png")
    assert inverted.getpixel((50, 50)) == original.getpixel((50, 50))  # outside the square: observed
    result = invoke(*args, "-o", small / "y.png", "--report", small / "y.json")
    assert result.exit_code == 0, result.output
    assert json.loads((small / "y.json").read_text())["results"][0]["missing_fraction"] > 0.9


def test_separate_sample_clip(tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(SAMPLES / "pedestrians.mp4", clip)
    result = invoke(
        "separate",
        clip,
        "--max-frames",
        12,
        "--chunk-frames",
        6,
        "--iters",
        30,
        "--grey",
        "--report",
        tmp_path / "s.json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "clip.separated"
    for name in ("background.mp4", "foreground.mp4", "mask.mp4"):
        assert (folder / name).stat().st_size > 0
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["frames"] == 12 and len(report["chunks"]) == 2
    import imageio.v2 as imageio

    assert imageio.get_reader(folder / "background.mp4").count_frames() == 12


def test_separate_streams_a_long_clip_in_bounded_chunks(tmp_path, monkeypatch):
    """60 frames with --chunk-frames 8: no solve sees more than 8 frames of its own, 4 of the
    next chunk (the look-ahead of its fade) and 10 carried ones, and
    no frame is decoded before the chunk that needs it."""
    from lrrtool import media
    from lrrtool.video import stream as task

    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(60):
        frame = Image.new("L", (32, 24), 120)
        frame.paste(250, (t % 28, 8, t % 28 + 4, 12))
        frame.save(folder / f"{t:03d}.png")
    decoded, solves = [], []
    real_open, real_separate = media.videos.open_image, task.separate_lifted

    def counting_open(path):
        decoded.append(path)
        return real_open(path)

    def recording_separate(frames, settings, *, memory=None, memory_full=None, callback=None):
        solves.append((frames.shape[0], 0 if memory is None else memory.shape[0], len(decoded)))
        assert (memory is None) == (memory_full is None)
        return real_separate(frames, settings, memory=memory, memory_full=memory_full, callback=callback)

    monkeypatch.setattr(media.videos, "open_image", counting_open)
    monkeypatch.setattr(task, "separate_lifted", recording_separate)
    result = invoke("separate", folder, "--chunk-frames", 8, "--output-dir", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    # Chunks of 8 with a look-ahead of 4 (the next chunk's fade): 8 chunks, the last without.
    assert [t for t, _, _ in solves] == [12] * 7 + [4]
    assert all(m <= 10 for _, m, _ in solves) and solves[1][1] > 0  # the background is carried
    for index, (_, _, seen) in enumerate(solves):
        assert seen <= 3 + 8 * (index + 1) + 4  # size probes of the first file + the chunks so far
    import imageio.v2 as imageio

    assert imageio.get_reader(tmp_path / "out" / "mask.mp4").count_frames() == 60


def test_separate_writes_every_frame_when_the_last_chunk_is_its_look_ahead(tmp_path):
    """21 frames in chunks of 5 with a look-ahead of 2: the frames left after the fourth
    chunk's start (15-20) hold more than a chunk, so frame 20 is a fifth chunk of its own;
    every frame is written."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(21):
        frame = Image.new("L", (32, 24), 120)
        frame.paste(250, (t, 8, t + 4, 12))
        frame.save(folder / f"{t:03d}.png")
    report = tmp_path / "report.json"
    result = invoke("separate", folder, "--chunk-frames", 5, "--output-dir", tmp_path / "out", "--report", report, "-q")
    assert result.exit_code == 0, result.output
    import imageio.v2 as imageio

    entry = json.loads(report.read_text())
    assert entry["frames"] == 21 and [c["frames"] for c in entry["chunks"]] == [5, 5, 5, 5, 1]
    for name in ("background", "foreground", "mask"):
        assert imageio.get_reader(tmp_path / "out" / f"{name}.mp4").count_frames() == 21


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("notvideo", "not a readable video"),
        ("dirfile", "exists and is not a folder"),
        ("missing", "no such file"),
        ("noframes", "no frames to process"),
        ("toolarge", "--memory-gib 0.25 does not hold frames"),
        ("truncated", "video"),
    ],
)
def test_separate_bad_input(tmp_path, make, message):
    video = tmp_path / "v.mp4"
    args = ["separate", str(video), "-q"]
    if make == "notvideo":
        video.write_bytes(b"garbage" * 100)
    elif make == "dirfile":
        shutil.copy(SAMPLES / "pedestrians.mp4", video)
        (tmp_path / "out").write_text("a file")
        args += ["--output-dir", str(tmp_path / "out")]
    elif make == "noframes":
        shutil.copy(SAMPLES / "pedestrians.mp4", video)
        args += ["--first-frame", "1000"]
    elif make == "truncated":  # a real header, the stream cut off: the codec cannot decode it
        video.write_bytes((SAMPLES / "pedestrians.mp4").read_bytes()[:3000])
    elif make == "toolarge":
        shutil.copy(SAMPLES / "pedestrians.mp4", video)
        args += ["--size", "3840x2160", "--memory-gib", "0.25"]
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and message in result.output.replace("\n", " "), result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_denoise_grey_and_bad_sigma(small):
    Image.open(small / "photo.png").convert("L").save(small / "grey.png")
    result = invoke("denoise", small / "grey.png", "--sigma", 10, "--iters", 10, "-o", small / "d.png", "-q")
    assert result.exit_code == 0, result.output
    assert Image.open(small / "d.png").mode == "L"
    result = invoke("denoise", small / "grey.png", "--sigma", -3, "-q")
    assert result.exit_code != 0 and "--sigma must be in (0, 255)" in result.output


def test_cuda_request_without_cuda_is_a_clean_error(small):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    result = invoke("inpaint", small / "photo.png", "--mask", small / "mask.png", "--device", "cuda", "-q")
    assert result.exit_code == 1 and "no CUDA device" in result.output


def test_a_loss_the_output_format_forces_is_said_on_the_console_and_in_the_report(small):
    """An RGBA input written as JPEG: the console says the alpha is not kept, and so does
    the report's entry; the exit code is 0 (the output is written)."""
    Image.open(small / "photo.png").convert("RGBA").save(small / "cut.png")
    report = small / "r.json"
    result = invoke("denoise", small / "cut.png", "--sigma", 20, "--iters", 1, "-o", small / "cut.jpg", "--report",
                    report)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "alpha not kept: JPEG cannot hold it" in result.output
    assert json.loads(report.read_text())["results"][0]["warnings"] == ["alpha not kept: JPEG cannot hold it"]
