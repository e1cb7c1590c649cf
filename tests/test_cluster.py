"""Scale-out on Ray (the ``ray`` extra, installed by ``.ci/run``): a batch run as Ray tasks
gives the sequential run's report, outputs and exit code; a worker that dies is retried."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_clean_failure
from PIL import Image
from typer.testing import CliRunner

from lrrtool import cluster
from lrrtool.cli import app

# One xdist worker runs every Ray test: two local Ray instances at once would compete.
pytestmark = pytest.mark.xdist_group("ray")

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
runner = CliRunner()
#: Report fields that differ between two runs of the same work.
VOLATILE = {"seconds", "phase_seconds", "output", "peak_memory_gib"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def local_ray():
    """One local instance (2 CPUs) for the module; lrrtool uses it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def batch(tmp_path):
    """Three 48x48 crops of the bundled photo and one broken 'image' among them."""
    photo = Image.open(SAMPLES / "photo.jpg")
    for k in range(3):
        photo.crop((60 * k, 80, 60 * k + 48, 128)).save(tmp_path / f"crop{k}.png")
    (tmp_path / "crop3.png").write_text("not an image")
    return tmp_path


def entries(report: Path) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in json.loads(report.read_text())["results"]]


@pytest.mark.parametrize("command", ["denoise", "inpaint"])
def test_ray_batch_gives_the_sequential_report_outputs_and_exit_code(local_ray, batch, command):
    extra = ("--drop", 0.3, "--iters", 4) if command == "inpaint" else ("--sigma", 20, "--iters", 3)
    runs = {}
    for name, flags in (("sequential", ()), ("ray", ("--ray",))):
        out, report = batch / name, batch / f"{name}.json"
        result = invoke(command, batch / "crop*.png", "--output-dir", out, "--report", report, *extra, *flags)
        assert result.exit_code == 1, result.output  # the broken input fails, the others are done
        assert "crop3.png" in result.output and "Traceback" not in result.output
        runs[name] = out
    assert entries(batch / "sequential.json") == entries(batch / "ray.json")
    for k in range(3):
        name = f"crop{k}.{command}d.png" if command == "denoise" else f"crop{k}.inpainted.png"
        a, b = (Image.open(runs[run] / name).tobytes() for run in ("sequential", "ray"))
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1
    assert not (runs["ray"] / "crop3.denoised.png").exists() and not (runs["ray"] / "crop3.inpainted.png").exists()
    # a second --ray run skips every existing output, as the sequential run does
    result = invoke(command, batch / "crop[012].png", "--output-dir", runs["ray"], *extra, "--ray")
    assert result.exit_code == 0 and result.output.count("skip ") == 3, result.output


def test_a_task_whose_worker_dies_is_run_again(local_ray, tmp_path):
    """The first worker to take the task exits at once, as a killed one would; Ray runs
    the task again on another worker process and the output is complete."""

    def dies_once(path: Path, target: Path) -> dict:  # local: pickled by value for the workers
        marker = target.with_suffix(".marker")
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        target.write_text(path.read_text())
        return {"input": str(path), "output": str(target), "pid": os.getpid()}

    (tmp_path / "in.txt").write_text("data")
    outcomes = {}
    cluster.run_tasks(
        local_ray,
        [(tmp_path / "in.txt", tmp_path / "out.txt")],
        dies_once,
        threads=1,
        gpus=0,
        finished=lambda k, outcome: outcomes.update({k: outcome}),
    )
    entry, error = outcomes[0]
    assert error is None and (tmp_path / "out.txt").read_text() == "data"
    assert entry["pid"] != int((tmp_path / "out.marker").read_text())  # another worker process did it


def test_ctrl_c_cancels_the_tasks_left_and_leaves_no_partial_file(local_ray, tmp_path):
    """Ctrl-C on the driver (here: raised as the first task ends) cancels the task still
    running; it is interrupted inside its atomic write, whose temporary file goes."""
    import time

    from lrrtool.media import atomic_path

    def slow_write(path: Path, target: Path) -> dict:  # local: pickled by value for the workers
        if path.name == "quick":
            return {"input": str(path)}
        with atomic_path(target) as tmp:
            tmp.write_text("half of it")
            time.sleep(60)
        return {"input": str(path)}

    partial = tmp_path / "out"
    started = time.perf_counter()

    def interrupt(k, outcome):  # once the slow task is half-way through its write
        while not list(partial.glob(".slow.*")) and time.perf_counter() - started < 20:
            time.sleep(0.1)
        assert list(partial.glob(".slow.*"))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        jobs = [(tmp_path / "quick", tmp_path / "q"), (tmp_path / "slow", partial / "slow.txt")]
        cluster.run_tasks(local_ray, jobs, slow_write, threads=1, gpus=0, finished=interrupt)
    while list(partial.glob(".*")) and time.perf_counter() - started < 20:  # the worker cleans up
        time.sleep(0.2)
    assert not partial.exists() or not list(partial.iterdir())
    assert time.perf_counter() - started < 20


def test_ray_options_are_checked(tmp_path, monkeypatch):
    Image.open(SAMPLES / "photo.jpg").crop((0, 0, 32, 32)).save(tmp_path / "a.png")
    result = invoke("denoise", tmp_path / "a.png", "--ray-address", "127.0.0.1:1")
    assert_clean_failure(result, "--ray-address is given without --ray")
    result = invoke("denoise", tmp_path / "a.png", "--ray", "--ray-address", "127.0.0.1:1")  # nothing listens
    assert_clean_failure(result, "--ray: nothing answers at 127.0.0.1:1")
    result = invoke("denoise", tmp_path / "a.png", "--ray", "--ray-address", "head-node")
    assert_clean_failure(result, "--ray-address must look like HOST:PORT")
    result = invoke("denoise", tmp_path / "a.png", "--segment-frames", 10)
    assert_clean_failure(result, "--segment-frames splits a clip into Ray tasks: give --ray too")
    from test_separate import planted_clip, write_clip

    clip = write_clip(tmp_path / "clip", planted_clip(frames=6)[0])
    before = {p.name: p.read_bytes() for p in clip.iterdir()}
    for flags, message in (
        (("--segment-frames", 4), "--segment-frames splits the video into Ray tasks: give --ray too"),
        (("--ray", "--frames"), "--frames is not available with --ray"),
    ):
        result = invoke("separate", clip, "--output-dir", tmp_path / "sep", *flags)
        assert_clean_failure(result, message, clip, before)
        assert not (tmp_path / "sep").exists()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    result = invoke("denoise", tmp_path / "a.png", "--ray")
    assert_clean_failure(result, 'pip install -e ".[ray]"')
    assert not (tmp_path / "a.denoised.png").exists()


def read_video(path: Path) -> torch.Tensor:
    """Every frame of a video file as float ``(T, H, W, C)`` in 0..255."""
    import imageio.v2 as imageio

    return torch.from_numpy(np.stack([frame for frame in imageio.get_reader(path, format="ffmpeg")])).float()


def test_separate_segments_are_joined_like_the_sequential_run(local_ray, tmp_path):
    """A 90-frame planted clip in three segments of 30 (chunks of 15; each segment warms
    up on the two chunks before it, so the third does not see frames 0-29): F-measure
    within 0.01 of the sequential run (measured 0.9814 against 0.9839), one video of 90
    frames per output, and no seam in the background at the borders: each border's
    frame-to-frame jump is at most twice the median jump, or the sequential run's own jump
    at that frame where the encoder makes that larger (measured 0.85/255 at both runs'
    frames 29-30, identical there; 0.26 at 59-60, the sequential run's 0.13, median 0.19)."""
    from test_separate import f_measure, planted_clip, write_clip

    video, truth, _ = planted_clip(frames=90, dimming=False)  # no light step at a border itself
    clip = write_clip(tmp_path / "clip", video)
    scores, reports = {}, {}
    for name, flags in (("sequential", ()), ("ray", ("--ray", "--segment-frames", 30))):
        out, report = tmp_path / name, tmp_path / f"{name}.json"
        result = invoke("separate", clip, "--output-dir", out, "--chunk-frames", 15, "--report", report, "-q", *flags)
        assert result.exit_code == 0, result.output
        mask = read_video(out / "mask.mp4")[..., 0] > 127
        assert mask.shape == truth.shape
        scores[name], reports[name] = f_measure(mask, truth), json.loads(report.read_text())
    assert abs(scores["ray"] - scores["sequential"]) <= 0.01 and scores["ray"] > 0.9, scores
    ray_report = reports["ray"]
    assert ray_report["frames"] == 90 and len(ray_report["chunks"]) == 6 and ray_report["warnings"] == []
    segments = [(s["start"], s["frames"], s["warmup"]) for s in ray_report["segments"]]
    assert segments == [(0, 30, 0), (30, 30, 30), (60, 30, 30)]
    jumps = {}
    for name in ("sequential", "ray"):
        background = read_video(tmp_path / name / "background.mp4")
        jumps[name] = (background[1:] - background[:-1]).abs().mean(dim=(1, 2, 3))
    for border in (29, 59):
        allowed = max(2 * float(jumps["ray"].median()), float(jumps["sequential"][border]))
        assert float(jumps["ray"][border]) <= allowed, (border, jumps)
    assert not list(tmp_path.glob(".ray.segments-*"))  # the scratch folders are gone


def test_default_segments_give_every_task_about_as_many_frames_to_solve(tmp_path):
    """150 frames in chunks of 15 over two slots: the first segment, with no warm-up, takes
    90 frames and the second 60 after its warm-up of 30, so each task solves 90 frames; the
    segments' outputs join into one run of 150 frames."""
    from test_separate import planted_clip, write_clip

    from lrrtool.jobs.videos import separate_segments
    from lrrtool.video import SeparateSettings

    video, _, _ = planted_clip(frames=150, height=48, width=64, dimming=False)
    clip = write_clip(tmp_path / "clip", video)
    solved = []

    def in_turn(jobs, work, finished):  # a runner without Ray: the tasks one after another
        for k, (path, target) in enumerate(jobs):
            entry = work(path, target)
            solved.append(sum(c["frames"] for c in entry["chunks"]))
            finished(k, (entry, None))

    report = separate_segments(clip, tmp_path / "out", SeparateSettings(), run=in_turn, slots=2, chunk_frames=15)
    assert [(s["start"], s["frames"], s["warmup"]) for s in report["segments"]] == [(0, 90, 0), (90, 60, 30)]
    assert solved == [90, 60] and report["frames"] == 150 and len(report["chunks"]) == 10
    assert read_video(tmp_path / "out" / "background.mp4").shape[0] == 150


def test_a_failed_segment_fails_the_run_and_leaves_no_output(local_ray, tmp_path):
    """Frames of two sizes in a folder: the segment that meets the odd frame fails, and
    the run exits 1 with that segment named, no output folder and no scratch folder."""
    from test_separate import planted_clip, write_clip

    video, _, _ = planted_clip(frames=30)
    clip = write_clip(tmp_path / "clip", video)
    Image.new("RGB", (64, 48)).save(clip / "025.png")  # frame 25 of another size
    out = tmp_path / "out"
    result = invoke("separate", clip, "--output-dir", out, "--ray", "--segment-frames", 10, "--chunk-frames", 5)
    assert_clean_failure(result, "segment 3 (frames 20-29)")
    assert not out.exists() and not list(tmp_path.glob(".out.segments-*"))


def test_a_clip_is_denoised_in_segments_on_ray_like_in_one_process(local_ray, tmp_path, monkeypatch):
    """A 20-frame clip with audio in chunks of 5, split over the 2 CPUs into 2 segments of
    10 (or, with --segment-frames 12, rounded up to 15 + 5): one video of 20 frames with
    the audio, frames within x264's rounding of the run in one process (each segment reads
    the frame before it; measured identical), each chunk reported once."""
    from test_jobs import clip_with_audio, streams

    from lrrtool.tasks import budget

    monkeypatch.setattr(budget, "MAX_CHUNK_FRAMES", 5)  # the driver plans; the tasks get its plan
    clip = clip_with_audio(tmp_path / "clip.mp4", seconds=0.8)
    reports, frames = {}, {}
    for name, flags in (("one", ()), ("ray", ("--ray",)), ("split", ("--ray", "--segment-frames", 12))):
        out, report = tmp_path / f"{name}.mp4", tmp_path / f"{name}.json"
        result = invoke("denoise", clip, "-o", out, "--sigma", 10, "--iters", 1, "--group", 8, "--reach", 1,
                        "--report", report, "-q", *flags)  # fmt: skip
        assert result.exit_code == 0, result.output
        reports[name] = json.loads(report.read_text())["results"][0]
        assert streams(out) == ["Video", "Audio"]
        assert [c["frames"] for c in reports[name]["chunks"]] == [5] * 4
        frames[name] = read_video(out)
        assert frames[name].shape == frames["one"].shape and frames[name].shape[0] == 20
        assert float((frames[name] - frames["one"]).abs().max()) <= 2, name
    starts = {name: [(s["start"], s["frames"]) for s in reports[name]["segments"]] for name in ("ray", "split")}
    assert starts == {"ray": [(0, 10), (10, 10)], "split": [(0, 15), (15, 5)]}
    assert len(list(tmp_path.iterdir())) == 7  # the clip, three videos and reports: no scratch left
