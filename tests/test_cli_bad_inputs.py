"""A new user's bad inputs, for every command: one line, exit 1, before any work (the
solvers are replaced by tripwires), nothing written or created, inputs untouched; and
the one overwrite rule (an existing output is skipped and said unless --overwrite)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_clean_failure, snapshot
from PIL import Image
from typer.testing import CliRunner

from lrrtool.cli import app
from lrrtool.workers import cpu_count

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
runner = CliRunner()


@pytest.fixture
def files(tmp_path):
    Image.open(SAMPLES / "photo.jpg").crop((100, 100, 132, 132)).save(tmp_path / "photo.png")
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (10, 10, 20, 20))
    mask.save(tmp_path / "mask.png")
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(6):
        frame = Image.new("L", (16, 12), 100)
        frame.paste(250, (2 * t, 4, 2 * t + 3, 7))
        frame.save(frames / f"{t}.png")
    rows = [f"u{u},i{i},{1 + (u + 2 * i) % 5}" for u in range(10) for i in range(8) if (u + i) % 3]
    (tmp_path / "ratings.csv").write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    (tmp_path / "pairs.csv").write_text("user,item\nu1,i1\nu2,i3\n")
    (tmp_path / "afile").write_text("a file, not a folder")
    return tmp_path


def tripwires(monkeypatch):
    """Every solve fails the test: a refusal must come before the work."""

    def boom(*args, **kwargs):
        raise AssertionError("the work started before the input was refused")

    from lrrtool.jobs import images, ratings, videos

    monkeypatch.setattr(images, "inpaint", boom)
    monkeypatch.setattr(images, "denoise", boom)
    monkeypatch.setattr(videos, "separate_chunks", boom)
    monkeypatch.setattr(ratings, "complete", boom)


def command(name: str, root: Path) -> list[str]:
    return {
        "inpaint": ["inpaint", str(root / "photo.png"), "--mask", str(root / "mask.png"), "--iters", "2"],
        "denoise": ["denoise", str(root / "photo.png"), "--sigma", "20", "--iters", "2"],
        "separate": ["separate", str(root / "frames"), "--iters", "5"],
        "complete": ["complete", str(root / "ratings.csv"), "--predict", str(root / "pairs.csv"), "--iters", "3"],
    }[name]


#: (case, extra arguments, expected message), the same for inpaint and denoise.
IMAGE_CASES = [
    ("unwritable output", ["--output-dir", "R/afile/out"], "afile is a file"),
    ("bad suffix", ["-o", "R/out.xyz"], "unknown image format '.xyz'"),
    ("missing reference", ["--reference", "R/nope.png"], "nope.png: no such file"),
    ("divergence", ["--solver", "adam", "--lr", "1", "--iters", "30", "-o", "R/out.png"], "lower the learning rate"),
    ("memory budget", ["--memory-gib", "0.25", "-o", "R/out.png"], "--memory-gib 0.25 is too small"),
]
#: (command, case, extra arguments, expected message); "R" is the temporary folder.
CASES = [
    *[(name, *case) for name in ("inpaint", "denoise") for case in IMAGE_CASES],
    ("separate", "unwritable output", ["--output-dir", "R/afile/out"], "afile is a file"),
    ("separate", "output is a file", ["--output-dir", "R/afile"], "exists and is not a folder"),
    # Adam's steps are about lr in size: within the accepted range separation does not diverge
    # (measured: --lr 1 for 30 steps runs cleanly), so an out-of-range step is refused first.
    (
        "separate",
        "divergent step size",
        ["--solver", "adam", "--lr", "5", "--output-dir", "R/out"],
        "--lr must be in (0, 1]",
    ),
    ("complete", "unwritable output", ["-o", "R/afile/out.csv"], "afile is a file"),
    ("complete", "bad suffix", ["-o", "R/out.xyz"], "give a .csv name"),
    ("complete", "missing reference", ["--predict", "R/nope.csv"], "nope.csv: no such file"),
    (
        "complete",
        "divergence",
        ["--method", "dlrl", "--p-block", "0.5", "--iters", "30", "-o", "R/out.csv"],
        "diverged",
    ),
]


@pytest.mark.parametrize(("name", "case", "extra", "message"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_input_is_one_line_before_the_work(files, monkeypatch, name, case, extra, message):
    if case not in ("divergence", "memory budget"):  # the others must be refused before any solve
        tripwires(monkeypatch)
    extra = [a.replace("R/", f"{files}/") for a in extra]
    before = {"root": snapshot(files), "frames": snapshot(files / "frames")}
    result = runner.invoke(app, [*command(name, files), *extra, "-q"])
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output
    assert snapshot(files) == before["root"] and snapshot(files / "frames") == before["frames"]
    assert not (files / "out").exists() and not list(files.glob("out.*"))  # nothing created


def test_one_frame_is_refused_by_the_parser_as_the_help_says(files):
    """``--max-frames`` takes 2 or more (a background needs two frames): 1 is a usage error."""
    result = runner.invoke(app, [*command("separate", files), "--max-frames", "1", "-q"])
    assert result.exit_code == 2 and "--max-frames" in result.output and "greater than or equal to 2" in result.output


@pytest.mark.parametrize("name", ["inpaint", "denoise", "separate", "complete"])
def test_existing_output_is_skipped_and_said_unless_overwrite(files, name):
    out = {"inpaint": "out.png", "denoise": "out.png", "complete": "out.csv", "separate": "sep"}[name]
    target = files / out
    where = ["--output-dir", str(target)] if name == "separate" else ["-o", str(target)]
    if name == "separate":
        target.mkdir()
        (target / "background.mp4").write_bytes(b"an earlier result")
        marker = target / "background.mp4"
    else:
        target.write_bytes(b"an earlier result")
        marker = target
    result = runner.invoke(app, [*command(name, files), *where])
    assert result.exit_code == 0 and "exists (use --overwrite)" in result.output, result.output
    assert marker.read_bytes() == b"an earlier result"
    result = runner.invoke(app, [*command(name, files), *where, "--overwrite", "-q"])
    assert result.exit_code == 0, result.output
    assert marker.read_bytes() != b"an earlier result"


def test_rerun_keeps_the_report_and_a_skipped_batch_says_so(files):
    shutil.copy(files / "photo.png", files / "second.png")
    args = ["inpaint", str(files / "photo.png"), str(files / "second.png"), "--mask", str(files / "mask.png")]
    args += ["--output-dir", str(files / "out"), "--iters", "2", "--report", str(files / "r.json")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0 and "2 of 2 inputs done, 0 skipped, 0 failed" in first.output, first.output
    report = json.loads((files / "r.json").read_text())
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 of 2 inputs done, 2 skipped, 0 failed" in again.output, again.output
    kept = json.loads((files / "r.json").read_text())
    assert [e["iterations"] for e in kept["results"]] == [e["iterations"] for e in report["results"]]
    assert report["threads"] == cpu_count() and report["command_line"].split()[0] == "lrrtool"  # every core


def test_failed_runs_leave_no_folders(files):
    (files / "corrupt.png").write_bytes(b"not an image")
    result = runner.invoke(
        app, ["inpaint", str(files / "corrupt.png"), "--drop", "0.3", "--output-dir", str(files / "new" / "deep")]
    )
    assert result.exit_code == 1 and not (files / "new").exists(), result.output
    (files / "clip.mp4").write_bytes(b"garbage" * 50)
    result = runner.invoke(app, ["separate", str(files / "clip.mp4")])
    assert result.exit_code == 1 and not (files / "clip.separated").exists(), result.output


def test_frame_folder_of_mixed_sizes_fails_midway_and_leaves_nothing(files):
    frames = files / "frames"
    Image.new("L", (16, 10), 100).save(frames / "4.png")  # the fifth frame is smaller
    before = snapshot(files)
    result = runner.invoke(app, ["separate", str(frames), "--chunk-frames", "2", "--iters", "3", "-q"])
    assert result.exit_code == 1 and "4.png: the frame is 16x10 but the first one is 16x12" in result.output
    assert len(result.output.strip().splitlines()) == 1 and snapshot(files) == before
    assert sorted(p.name for p in files.iterdir() if p.is_dir()) == ["frames"]  # no output folder left


def test_sixteen_bit_grey_frames_are_scaled_not_clipped(tmp_path):
    import numpy as np

    from lrrtool.media import read_video_chunks

    ramp = np.linspace(0, 65535, 12 * 16).reshape(12, 16).astype(np.uint16)
    for t in range(3):
        Image.fromarray(ramp).save(tmp_path / f"{t}.png")
    chunk, _ = next(read_video_chunks(tmp_path, chunk_frames=3))
    assert chunk.shape == (3, 3, 12, 16)
    assert abs(float(chunk.mean()) - 0.5) < 0.01  # clipped at 255 it would be nearly all white


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-t", "1"], "cannot write (ffmpeg stopped: [Errno 32] Broken pipe)"),
        (["-vf", "select=lt(n\\,75)"], "cannot write (ffmpeg could not finish"),
    ],
)
def test_a_video_that_ffmpeg_cannot_finish_is_an_error_and_leaves_nothing(files, monkeypatch, options, message):
    """ffmpeg reports a failed write (a full disk) only on its own stderr and leaves a short
    file. Here ``-t 1`` makes it quit after 1 s of video while frames are still sent (a
    broken pipe), and a ``select`` filter makes it read every frame but write only 75 of
    the 80 (``-t 3`` did that too, but raced: ffmpeg could quit before the last frames were
    in the pipe). The run must fail with one line, and no output may be left as if
    complete. (Checked by hand on a 100 KiB tmpfs too: "foreground.mp4: cannot write (the
    disk is full; the file came out incomplete and was removed)".)"""
    import imageio_ffmpeg

    real_write_frames = imageio_ffmpeg.write_frames

    def stopping_write_frames(path, *args, **kwargs):
        kwargs["output_params"] = [*kwargs.get("output_params", []), *options]
        return real_write_frames(path, *args, **kwargs)

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", stopping_write_frames)
    noise = files / "noise"  # 80 frames at 25 fps: 3.2 s
    noise.mkdir()
    g = np.random.default_rng(0)
    for t in range(80):
        Image.fromarray(g.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(noise / f"{t:02d}.png")
    before = snapshot(files)
    result = runner.invoke(app, ["separate", str(noise), "--output-dir", str(files / "out"), "-q"])
    assert_clean_failure(result, message, files, before)
    assert len(result.output.strip().splitlines()) == 1 and not (files / "out").exists()
