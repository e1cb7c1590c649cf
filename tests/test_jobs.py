"""The application layer: one call per command gives what the command line gives; one
progress shape; Ray ships library functions; errors name parameters, the CLI flags."""

import json
import pickle
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from lrrtool import jobs
from lrrtool.cli import app
from lrrtool.cli.display import flag_message
from lrrtool.errors import LRRError
from lrrtool.tasks.denoise import DenoiseSettings
from lrrtool.tasks.inpaint import InpaintSettings

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
#: Report fields that differ between two runs of the same work (or name its outputs).
VOLATILE = {"seconds", "phase_seconds", "output", "peak_memory_gib", "final"}


@pytest.fixture
def small(tmp_path):
    """A 48x48 crop of the bundled photo and a block mask (white = fill)."""
    Image.open(SAMPLES / "photo.jpg").crop((100, 100, 148, 148)).save(tmp_path / "photo.png")
    mask = Image.new("L", (48, 48), 0)
    mask.paste(255, (16, 16, 28, 28))
    mask.save(tmp_path / "mask.png")
    return tmp_path


def entries(report: dict) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in report["results"]]


def test_one_library_call_gives_the_command_lines_outputs_and_report(small):
    """``jobs.inpaint`` with a request writes the same image and the same report as
    ``lrrtool inpaint`` with the same options."""
    cli = small / "cli"
    result = CliRunner().invoke(app, [
        "inpaint", str(small / "photo.png"), "--mask", str(small / "mask.png"), "--iters", "2", "--output-dir",
        str(cli), "--report", str(small / "cli.json"), "-q", "--threads", "1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    request = jobs.InpaintRequest(
        (small / "photo.png",), mask=small / "mask.png", settings=InpaintSettings(iters=2),
        outputs=jobs.Outputs(output_dir=small / "api", report=small / "api.json"), runtime=jobs.Runtime(threads=1),
    )  # fmt: skip
    report = json.loads(json.dumps(jobs.inpaint(request), default=str))  # as the report file holds it
    written = [Image.open(folder / "photo.inpainted.png").tobytes() for folder in (cli, small / "api")]
    assert written[0] == written[1]
    from_cli = json.loads((small / "cli.json").read_text())
    assert entries(report) == entries(from_cli) == entries(json.loads((small / "api.json").read_text()))
    same = ("command", "version", "device", "threads", "dtype", "settings")
    assert {k: report[k] for k in same} == {k: from_cli[k] for k in same}


def test_progress_is_one_shape_with_a_total_and_each_input_ends_once(small):
    """Every update is an ``Update``; the solve's updates carry a total from the first; the
    input ends with ``done`` and its entry; a second run skips it (and says so)."""
    updates = []
    request = jobs.InpaintRequest((small / "photo.png",), mask=small / "mask.png", settings=InpaintSettings(iters=3))
    jobs.inpaint(request, updates.append)
    assert all(isinstance(u, jobs.Update) for u in updates)
    steps = [u for u in updates if not u.ended]
    assert steps and all(u.total is not None and 0 <= u.done <= u.total for u in steps)
    ends = [u for u in updates if u.ended]
    assert [u.phase for u in ends] == ["done"] and ends[0].entry["output"].endswith("photo.inpainted.png")
    again = []
    jobs.inpaint(request, again.append)
    assert [u.phase for u in again] == ["skipped"] and again[0].entry["skipped"]


def test_a_failed_input_is_reported_and_worded_by_the_caller(small):
    """An input that fails is an entry with the error, worded by ``describe`` (the CLI's
    flags); the others go on."""
    (small / "broken.png").write_text("not an image")
    request = jobs.DenoiseRequest((small / "broken.png", small / "photo.png"), sigma=20.0,
                                  settings=DenoiseSettings(iters=1))  # fmt: skip
    report = jobs.denoise(request, describe=lambda error: "worded: " + str(error))
    failed, done = report["results"]
    assert failed["error"].startswith("worded: ") and "output" in done


def test_ray_gets_a_picklable_library_function_not_a_closure(small, monkeypatch):
    """What a batch hands to Ray pickles with the standard pickle (no closure)."""
    from lrrtool import cluster

    shipped = []

    def fake_run_tasks(engine, jobs_, work, *, threads, gpus, finished):
        shipped.append(pickle.dumps(work))
        for k, (path, target) in enumerate(jobs_):
            finished(k, (pickle.loads(shipped[-1])(path, target), None))

    class FakeSession:
        def __enter__(self):
            return None

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(cluster, "run_tasks", fake_run_tasks)
    monkeypatch.setattr(cluster, "session", lambda address: FakeSession())
    request = jobs.InpaintRequest((small / "photo.png",), mask=small / "mask.png", settings=InpaintSettings(iters=1),
                                  runtime=jobs.Runtime(ray=True))  # fmt: skip
    report = jobs.inpaint(request)
    assert shipped and "error" not in report["results"][0]


def test_library_errors_name_parameters_and_the_cli_words_them_as_flags():
    """A message names parameters; ``flag_message`` rewords the leading one and the ones it
    mentions, nothing else; the error pickles whole (a Ray task's error)."""
    error = LRRError("memory_gib 0.3 does not hold frames of 8x8: use scale/size, grey or a larger budget",
                     parameter="memory_gib", mentions=("scale", "size", "grey"))  # fmt: skip
    assert flag_message(error) == (
        "--memory-gib 0.3 does not hold frames of 8x8: use --scale/--size, --grey or a larger budget"
    )
    device = LRRError("device cuda: no CUDA device is available", parameter="device")
    assert flag_message(device) == "--device cuda: no CUDA device is available"
    back = pickle.loads(pickle.dumps(error))
    assert (str(back), back.parameter, back.mentions) == (str(error), error.parameter, error.mentions)


def test_requests_refuse_what_cannot_run_before_any_work(small):
    with pytest.raises(LRRError, match="exactly one of mask, mask_dir or drop") as caught:
        jobs.inpaint(jobs.InpaintRequest((small / "photo.png",)))
    assert flag_message(caught.value) == "give exactly one of --mask, --mask-dir or --drop"
    with pytest.raises(LRRError, match="sigma must be in"):
        jobs.denoise(jobs.DenoiseRequest((small / "photo.png",), sigma=300.0))


def test_a_sixteen_bit_image_keeps_its_observed_pixels_bit_for_bit(tmp_path):
    import cv2
    import numpy as np

    array = (np.random.default_rng(3).random((40, 40, 3)) * 20000 + 20000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "scan.png"), array[:, :, ::-1])
    mask = np.zeros((40, 40), np.uint8)
    mask[15:25, 15:25] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    request = jobs.InpaintRequest(
        (tmp_path / "scan.png",), mask=tmp_path / "mask.png", settings=InpaintSettings(iters=2)
    )
    report = jobs.inpaint(request)
    assert "warnings" not in report["results"][0]
    out = cv2.imread(str(tmp_path / "scan.inpainted.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert out.dtype == np.uint16 and np.array_equal(out[mask == 0], array[mask == 0])
    assert not np.array_equal(out[mask > 0], array[mask > 0])


def test_the_alpha_channel_as_the_mask_and_a_format_that_cannot_hold_alpha(tmp_path):
    """``mask="alpha"`` fills the transparent pixels and makes them opaque; the rest of
    the alpha is kept; written as JPEG, the loss of alpha is said in the report."""
    import numpy as np

    rgba = np.asarray(Image.open(SAMPLES / "photo.jpg").convert("RGBA").crop((0, 0, 48, 48))).copy()
    rgba[10:20, 10:20, 3] = 0
    rgba[30:, :, 3] = 128
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    jobs.inpaint(jobs.InpaintRequest((tmp_path / "cut.png",), mask="alpha", settings=InpaintSettings(iters=1)))
    out = np.asarray(Image.open(tmp_path / "cut.inpainted.png"))
    assert out.shape == (48, 48, 4) and (out[10:20, 10:20, 3] == 255).all() and (out[30:, :, 3] == 128).all()
    assert np.array_equal(out[:10, :, :3], rgba[:10, :, :3])
    outputs = jobs.Outputs(output=tmp_path / "cut.jpg")
    report = jobs.denoise(jobs.DenoiseRequest((tmp_path / "cut.png",), sigma=10.0, outputs=outputs,
                                              settings=DenoiseSettings(iters=1)))  # fmt: skip
    assert report["results"][0]["warnings"] == ["alpha not kept: JPEG cannot hold it"]


def test_inputs_whose_outputs_would_share_a_name_get_distinct_names_or_are_refused(tmp_path):
    """``pic.jpg`` and ``pic.png`` -> ``pic.jpg.denoised.png`` and ``pic.png.denoised.png``
    (both written); ``a/pic.png`` and ``b/pic.png`` into one folder: refused before any work."""
    photo = Image.open(SAMPLES / "photo.jpg").crop((0, 0, 32, 32))
    photo.save(tmp_path / "pic.jpg")
    photo.save(tmp_path / "pic.png")
    settings = DenoiseSettings(iters=1)
    report = jobs.denoise(
        jobs.DenoiseRequest((tmp_path / "pic.jpg", tmp_path / "pic.png"), sigma=10.0, settings=settings)
    )
    assert [Path(e["output"]).name for e in report["results"]] == ["pic.jpg.denoised.png", "pic.png.denoised.png"]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        photo.save(tmp_path / folder / "pic.png")
    request = jobs.DenoiseRequest((tmp_path / "a" / "pic.png", tmp_path / "b" / "pic.png"), sigma=10.0,
                                  settings=settings, outputs=jobs.Outputs(output_dir=tmp_path / "out"))  # fmt: skip
    with pytest.raises(LRRError, match="would both be written to"):
        jobs.denoise(request)
    assert not (tmp_path / "out").exists()


def clip_with_audio(path: Path, audio: str = "aac", seconds: float = 2.0) -> Path:
    """A 25 fps 48x32 test pattern with a 440 Hz tone (``audio`` codec), made by ffmpeg."""
    import subprocess

    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=48x32:rate=25"]
    command += ["-f", "lavfi", "-i", "sine=frequency=440", "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    subprocess.run([*command, "-c:a", audio, str(path)], check=True)
    return path


def streams(path: Path) -> list[str]:
    """The kinds of the streams of a media file, in order (``["Video", "Audio", "Subtitle"]``)."""
    import subprocess

    import imageio_ffmpeg

    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    )
    kinds = ("Video", "Audio", "Subtitle")
    return [kind for line in probe.stderr.splitlines() for kind in kinds if f": {kind}:" in line]


@pytest.mark.parametrize("audio", ["aac", "pcm_s16le"])
def test_a_clip_keeps_its_audio_in_the_videos_that_show_the_picture(tmp_path, audio):
    """H.264 with AAC (an .mp4) or PCM (a .mov): the background and foreground videos carry
    the audio of the frames written (from frame 10, 30 frames: 1.2 s), the mask does not."""
    import imageio.v2 as imageio

    clip = clip_with_audio(tmp_path / ("clip.mp4" if audio == "aac" else "clip.mov"), audio)
    request = jobs.SeparateRequest(
        clip, first_frame=10, max_frames=30, outputs=jobs.Outputs(output_dir=tmp_path / "out")
    )
    report = jobs.separate(request)
    assert report["audio"] == [audio] and report["frames"] == 30
    for name in ("background", "foreground"):
        assert streams(tmp_path / "out" / f"{name}.mp4") == ["Video", "Audio"]
        reader = imageio.get_reader(tmp_path / "out" / f"{name}.mp4", format="ffmpeg")
        assert abs(reader.get_meta_data()["duration"] - 1.2) < 0.1
    assert streams(tmp_path / "out" / "mask.mp4") == ["Video"]


def test_segments_joined_carry_the_audio_once(tmp_path):
    """A video split into segments (run one after another here, as Ray would run them):
    the joined background has the audio of all its frames."""
    from lrrtool.jobs.videos import separate_segments
    from lrrtool.video import SeparateSettings

    clip = clip_with_audio(tmp_path / "clip.mp4", seconds=2.4)

    def in_turn(jobs_, work, finished):
        for k, (path, target) in enumerate(jobs_):
            finished(k, (work(path, target), None))

    report = separate_segments(
        clip, tmp_path / "out", SeparateSettings(), run=in_turn, segment_frames=30, chunk_frames=10
    )
    assert len(report["segments"]) == 2 and report["audio"] == ["aac"]
    assert streams(tmp_path / "out" / "background.mp4") == ["Video", "Audio"]
    assert streams(tmp_path / "out" / "mask.mp4") == ["Video"]


def ffmpeg(*arguments: str) -> None:
    import subprocess

    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *arguments], check=True)


def test_a_variable_frame_rate_clip_is_refused_before_any_work(tmp_path):
    """30, then 10, then 30 fps: written at one rate its motion would change speed, so it
    is refused with the reason and a way out; nothing is created."""
    pts = "if(lt(N,10),N/30,if(lt(N,20),10/30+(N-10)/10,10/30+1+(N-20)/30))/TB"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x32:rate=30", "-frames:v", "30", "-vf", f"setpts='{pts}'",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(tmp_path / "vfr.mp4"))  # fmt: skip
    request = jobs.SeparateRequest(tmp_path / "vfr.mp4", outputs=jobs.Outputs(output_dir=tmp_path / "out"))
    with pytest.raises(LRRError, match="variable frame rate"):
        jobs.separate(request)
    assert not (tmp_path / "out").exists()


def test_a_rotated_clip_comes_out_upright_without_a_warning(tmp_path, capfd):
    """A clip stored 48x32 with a 90 degree display rotation (a phone held upright) is
    separated upright (32 wide, 48 high), and nothing is printed about the sizes."""
    import imageio.v2 as imageio

    clip = clip_with_audio(tmp_path / "flat.mp4", seconds=1.0)
    ffmpeg("-display_rotation", "90", "-i", str(clip), "-c", "copy", str(tmp_path / "rotated.mp4"))
    capfd.readouterr()
    jobs.separate(jobs.SeparateRequest(tmp_path / "rotated.mp4", outputs=jobs.Outputs(output_dir=tmp_path / "out")))
    assert imageio.get_reader(tmp_path / "out" / "background.mp4", format="ffmpeg").get_data(0).shape == (48, 32, 3)
    assert "frame size" not in capfd.readouterr().err


def test_two_clips_with_one_stem_get_two_folders(tmp_path):
    """``clip.mp4`` then ``clip.mkv``: the second does not skip because of the first's
    outputs; it gets ``clip.mkv.separated/``. The first, run again, is skipped as before."""
    clip = clip_with_audio(tmp_path / "clip.mp4", seconds=0.8)
    ffmpeg("-i", str(clip), "-c", "copy", str(tmp_path / "clip.mkv"))
    first = jobs.separate(jobs.SeparateRequest(clip))
    second = jobs.separate(jobs.SeparateRequest(tmp_path / "clip.mkv"))
    assert Path(first["output_dir"]).name == "clip.separated"
    assert Path(second["output_dir"]).name == "clip.mkv.separated" and not second.get("skipped")
    assert jobs.separate(jobs.SeparateRequest(clip))["skipped"]


def test_text_subtitles_come_along_as_mp4_text(tmp_path):
    """An MKV with AAC audio and SRT subtitles: the background video has the audio and
    the subtitles (as MP4's text track)."""
    clip = clip_with_audio(tmp_path / "clip.mp4", seconds=1.0)
    (tmp_path / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:00,800\nHello\n")
    ffmpeg("-i", str(clip), "-i", str(tmp_path / "subs.srt"), "-map", "0", "-map", "1", "-c", "copy", "-c:s", "srt",
           str(tmp_path / "clip.mkv"))  # fmt: skip
    report = jobs.separate(jobs.SeparateRequest(tmp_path / "clip.mkv", outputs=jobs.Outputs(output_dir=tmp_path / "o")))
    assert streams(tmp_path / "o" / "background.mp4") == ["Video", "Audio", "Subtitle"]
    assert not [w for w in report["warnings"] if "not kept" in w]


def test_an_odd_sized_clip_comes_out_at_its_size(tmp_path):
    """A 41x23 clip (odd sides, as 641x361): every output video is 41x23."""
    import imageio.v2 as imageio

    ffmpeg("-f", "lavfi", "-i", "testsrc=size=41x23:rate=25", "-t", "0.8", "-c:v", "libx264", "-pix_fmt", "yuv444p",
           str(tmp_path / "odd.mp4"))  # fmt: skip
    jobs.separate(jobs.SeparateRequest(tmp_path / "odd.mp4", outputs=jobs.Outputs(output_dir=tmp_path / "o")))
    for name in ("background", "foreground", "mask"):
        assert imageio.get_reader(tmp_path / "o" / f"{name}.mp4", format="ffmpeg").get_data(0).shape[:2] == (23, 41)
