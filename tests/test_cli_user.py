"""What a new user sees: help at 80 columns, named progress phases with totals, a
report that says what ran, unwrapped lines when piped, and the thread setting."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lrrtool import LowRankRegularizer, workers
from lrrtool.cli import app
from lrrtool.forward import SparseNoise
from lrrtool.media import read_image, read_mask
from lrrtool.priors import FramesAsColumns, LowRankPrior
from lrrtool.solvers import robust_pca
from lrrtool.tasks.inpaint import InpaintSettings, inpaint

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
runner = CliRunner()


@pytest.mark.parametrize("command", ["inpaint", "separate", "denoise", "complete", "penalties"])
def test_help_reads_at_80_columns(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "<bool>" not in result.output and "<list" not in result.output and "<str>" not in result.output


def help_of(command: str) -> str:
    return " ".join(runner.invoke(app, [command, "--help"], terminal_width=200).output.split())


def test_help_says_what_each_option_does_for_its_command():
    """Usage lines as the metavars say them (``IMAGE...``, not ``{IMAGE...}...``); one
    meaning of a flag per command (separate's first frame is ``--first-frame``, inpaint's
    start method ``--start``); ``--max-frames`` takes 2 or more as it says; ``--seed``
    does not speak of drops where there are none; complete's ``--width`` names autorec."""
    assert "[OPTIONS] IMAGE...\n" in runner.invoke(app, ["inpaint", "--help"]).output
    assert "{" not in runner.invoke(app, ["denoise", "--help"]).output.splitlines()[0]
    separate = help_of("separate")
    assert "--first-frame" in separate and "--start " not in separate and "x>=2" in separate
    assert "drops" not in help_of("denoise").split("--seed")[1].split("--")[0]
    assert "autorec" in help_of("complete").split("--width N")[-1].split("--")[0]


def test_inpaint_reports_a_named_start_phase_then_the_solve_and_settles():
    image = read_image(SAMPLES / "photo.jpg")[:, :64, :64]
    fill = read_mask(SAMPLES / "text-mask.png", (300, 300))[:64, :64]
    seen = []
    _, result = inpaint(image, fill, InpaintSettings(), callback=seen.append)
    phases = [p.phase for p in seen]
    assert phases[:2] == ["start", "start"] and seen[1].iteration == seen[1].total == 1
    assert set(phases[2:]) == {"solve"} and seen[-1].iteration == seen[-1].total == 16
    assert result.converged and result.value < 1 / 1020  # settled: under a quarter grey level
    unsettled = inpaint(image, fill, InpaintSettings(iters=1, noise_start=0.5, noise_end=0.5, lam=100.0))[1]
    assert not unsettled.converged


def test_a_stop_rule_completes_the_progress_total(rng):
    low = torch.randn(300, 2, generator=rng, dtype=torch.float64) @ torch.randn(
        2, 20, generator=rng, dtype=torch.float64
    )
    seen = []
    prior = LowRankPrior(LowRankRegularizer("nuclear"), FramesAsColumns())
    _, result = robust_pca(
        SparseNoise(low.mT.reshape(20, 1, 30, 10)), prior, weight=0.05, iters=500, callback=seen.append
    )
    assert result.converged and result.iterations < 500
    assert seen[-1].iteration == seen[-1].total == result.iterations


def test_report_says_what_ran_and_threads_are_set(tmp_path):
    Image.open(SAMPLES / "photo.jpg").crop((0, 0, 40, 40)).save(tmp_path / "p.png")
    args = [
        "denoise",
        str(tmp_path / "p.png"),
        "--sigma",
        "20",
        "--iters",
        "2",
        "-q",
        "--report",
        str(tmp_path / "r.json"),
    ]
    assert runner.invoke(app, [*args, "--threads", "2"]).exit_code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    # image commands: that many workers, each with one torch thread (no spinning OpenMP team)
    assert report["threads"] == 2 == workers.workers() and torch.get_num_threads() == 1
    assert report["dtype"] == "float32" and report["version"] and report["device"] == "cpu"
    entry = report["results"][0]
    assert entry["final"].keys() == {"change"} and isinstance(entry["converged"], bool)
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert json.loads((tmp_path / "r.json").read_text())["threads"] == workers.cpu_count()  # default: every core


def test_piped_lines_are_not_wrapped(tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 4)
    deep.mkdir()
    Image.open(SAMPLES / "photo.jpg").crop((0, 0, 40, 40)).save(deep / "photo-with-a-long-name.png")
    result = runner.invoke(app, ["denoise", str(deep / "photo-with-a-long-name.png"), "--sigma", "20", "--iters", "2"])
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if "->" in line)
    assert line.endswith("s)") and "denoised.png" in line and len(line) > 120
