"""Video inpainting and denoising: groups across frames, the temporal start, clips in and out."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lrrtool import jobs
from lrrtool.cli import app
from lrrtool.errors import LRRError
from lrrtool.metrics import psnr
from lrrtool.patches import PatchGroups, TemporalSearch, all_patches, group_indices
from lrrtool.tasks.denoise import DenoiseSettings, denoise
from lrrtool.tasks.inpaint import InpaintSettings, inpaint
from lrrtool.tasks.temporal import camera_search, frame_cubes, frame_shifts, from_cubes, temporal_start
from tests.test_jobs import clip_with_audio, streams

QUICK_DENOISE = DenoiseSettings(iters=2, group=16, window=4)


def texture(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth random colour texture in [0, 1], (3, H, W): what a camera would pan over."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(3, height // 4 + 2, width // 4 + 2, generator=g)
    fine = torch.nn.functional.interpolate(coarse[None], scale_factor=4, mode="bicubic", align_corners=False)[0]
    return fine[:, :height, :width].clamp(0, 1)


def panned(frames: int, height: int, width: int, step: int) -> torch.Tensor:
    """A camera moving right ``step`` pixels a frame over a texture: ``(T, 3, H, W)``."""
    scene = texture(height, width + step * frames)
    return torch.stack([scene[:, :, step * t : step * t + width] for t in range(frames)])


def test_a_video_search_finds_the_patch_in_the_neighbouring_frames():
    """Three identical frames: each reference's group holds its own patch from every frame
    (distance 0) before any other, and the indices point into the right frames."""
    frame = torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(1))
    video = frame.expand(3, 1, 12, 12).contiguous()
    index = group_indices(video, patch=3, group=3, stride=4, window=2, search_step=1, temporal=TemporalSearch(1))
    L = 10 * 10
    assert index.shape == (3 * 16, 3)  # rows and columns 0, 4, 8, 9
    for row, t in zip(index, torch.arange(3).repeat_interleave(16), strict=True):
        place = int(row[0]) % L
        assert int(row[0]) // L == t  # the reference first
        seen = {t - 1, t, t + 1} & {0, 1, 2}
        assert {place + L * int(f) for f in seen} <= set(row.tolist())


def test_tiles_and_frame_spans_give_the_same_groups_as_one_solve():
    video = torch.rand(5, 3, 30, 34, generator=torch.Generator().manual_seed(2))
    options = dict(
        patch=4, group=10, stride=3, window=4, search_step=1, temporal=TemporalSearch(2, 3, ((1, -2), (2, -3)))
    )
    whole = PatchGroups(video, **options)
    parts = PatchGroups(video, tile=6, span=2, batch=5, **options)
    order = lambda index: index[torch.argsort(index[:, 0])]  # noqa: E731
    assert whole.count == parts.count
    assert torch.equal(order(whole.index), order(parts.index))
    assert torch.equal(whole.covered, parts.covered)
    estimate = torch.rand_like(video)
    assert torch.allclose(whole.map(estimate, lambda g, _: g * 0.5), parts.map(estimate, lambda g, _: g * 0.5))
    rows = all_patches(video, 4)
    assert torch.equal(whole.gather(video)[0], rows[whole.index[0]])


def test_frame_shifts_find_a_planted_camera_pan():
    video = panned(6, 40, 48, 3)
    fill = torch.zeros(6, 40, 48, dtype=torch.bool)
    fill[:, 28:34, 8:40] = True  # a caption
    shifts = frame_shifts(video, fill)
    assert torch.equal(shifts[:, 1], torch.arange(6) * -3) and bool((shifts[:, 0] == 0).all())
    search = camera_search(shifts, reach=2, window=1)
    assert search.centres == ((0, -3), (0, -6)) and search.centre(-2) == (0, 6)
    assert search.offsets(4, 1)[81:84] == [(-1, -1, 2), (-1, -1, 3), (-1, -1, 4)]  # around +3 a frame back
    assert search.extent(4) == 7 and camera_search(torch.zeros(6, 2, dtype=torch.long), 2).centres == ()


def test_frame_shifts_find_a_pan_under_a_random_drop_of_half_the_pixels():
    """Scattered drops leave few whole neighbourhoods seen; the pan is still found (it was
    taken as a still camera: every shift scored as infinite)."""
    video = panned(6, 64, 80, 2)
    g = torch.Generator().manual_seed(0)
    for fill in (torch.rand(64, 80, generator=g).lt(0.5).expand(6, 64, 80), torch.rand(6, 64, 80, generator=g) < 0.5):
        shifts = frame_shifts(video.masked_fill(fill[:, None], 0), fill)
        assert torch.equal(shifts[:, 1], torch.arange(6) * -2) and bool((shifts[:, 0] == 0).all())


def test_a_static_overlay_over_a_moving_scene_is_filled_from_the_frames_that_show_it():
    """A caption fixed on the screen while the camera pans: the pixels under it in one frame
    are seen in the others, so the fill is close to the truth, far closer than the best
    image inpainting of each frame alone."""
    video = panned(10, 32, 48, 2)
    fill = torch.zeros(32, 48, dtype=torch.bool)
    fill[20:26, 12:24] = True
    out, result = inpaint(video.masked_fill(fill, 0), fill, InpaintSettings(iters=2))
    per_frame = torch.stack([inpaint(f.masked_fill(fill, 0), fill, InpaintSettings(iters=2))[0] for f in video])
    hidden = fill.expand(10, 3, 32, 48)
    assert torch.equal(out[~hidden], video[~hidden])  # observed pixels kept exactly
    ours, theirs = psnr(out[hidden], video[hidden]), psnr(per_frame[hidden], video[hidden])
    assert ours > 35 and ours > theirs + 8, (ours, theirs)
    assert result.details["shown_by_other_frames"] == 1.0


def test_what_no_frame_shows_is_filled_alike_in_alike_frames():
    """A still scene under a still overlay: nothing to take from other frames, the start is the
    same in every frame (no flicker)."""
    frame = texture(24, 32)
    video = frame.expand(6, 3, 24, 32).clone()
    fill = torch.zeros(6, 24, 32, dtype=torch.bool)
    fill[:, 8:14, 10:20] = True
    start, details = temporal_start(video.masked_fill(fill[:, None], 0), fill)
    assert details["shown_by_other_frames"] == 0.0 and details["unseen_start"] == "harmonic"
    assert torch.allclose(start[0], start[5], atol=1e-6)


def test_a_frame_that_differs_around_the_hole_gives_it_nothing():
    """A cut between two scenes: frame 3 (the second scene) has a hole that frames 2 (the
    first scene) and 4 (the second) both show, equally near. Frame 2 comes first in the
    order but differs from frame 3 around the hole, so the pixels come from frame 4: the
    truth exactly; and a frame that nothing agrees with is filled from its own pixels."""
    first, second = texture(40, 48, seed=1), texture(40, 48, seed=2)
    video = torch.stack([first] * 3 + [second] * 3)
    fill = torch.zeros(6, 40, 48, dtype=torch.bool)
    fill[3, 14:24, 16:30] = True
    still = torch.zeros(6, 2, dtype=torch.long)
    start, details = temporal_start(video.masked_fill(fill[:, None], 0), fill, shifts=still)
    assert details["shown_by_other_frames"] == 1.0
    assert torch.equal(start[3], second)
    video[4:] = texture(40, 48, seed=3)  # now no frame agrees with frame 3
    start, details = temporal_start(video.masked_fill(fill[:, None], 0), fill, shifts=still)
    assert details["shown_by_other_frames"] == 0.0 and details["unseen_start"] == "harmonic"


def test_a_clips_holes_keep_the_start_and_scattered_pixels_are_refined():
    """A hole in a clip keeps the temporal start (the steps measured no gain there, see
    ``InpaintSettings.video_defaults``) unless steps are asked for; a scattered drop gets them."""
    video = panned(6, 24, 32, 2)
    hole = torch.zeros(24, 32, dtype=torch.bool)
    hole[10:16, 8:20] = True
    out, result = inpaint(video.masked_fill(hole, 0), hole)
    fill = hole.expand(6, 24, 32)
    start, _ = temporal_start(video.masked_fill(hole, 0), fill)
    assert result.iterations == 0 and result.details["refined"] is False
    assert torch.equal(out, start.clamp(0, 1).where(fill[:, None], video))
    assert inpaint(video.masked_fill(hole, 0), hole, InpaintSettings(iters=1))[1].iterations == 1
    drop = torch.rand(24, 32, generator=torch.Generator().manual_seed(0)) < 0.3
    assert inpaint(video.masked_fill(drop, 0), drop, InpaintSettings(group=8))[1].iterations == 4


def test_a_clip_whose_holes_keep_the_start_is_read_in_larger_chunks(tmp_path):
    """Where the start is kept no tiles of patch groups follow, so the chunks are planned
    with the start's buffers and a larger share of the budget: more frames a chunk than the
    refinement's plan, one fill serving several frames of a still camera."""
    from lrrtool.tasks.budget import chunk_plan
    from lrrtool.tasks.inpaint import INPAINT_BUFFERS, START_BUFFERS, START_SHARE

    video = panned(6, 480, 640, 1)
    write_frames(tmp_path / "shots", video)
    mask = np.zeros((480, 640), np.uint8)
    mask[400:440, 80:560] = 255
    Image.fromarray(mask).save(tmp_path / "caption.png")
    request = jobs.InpaintRequest(
        (tmp_path / "shots",), mask=tmp_path / "caption.png", runtime=jobs.Runtime(memory_gib=0.6)
    )
    entry = jobs.inpaint(request)["results"][0]
    kept = chunk_plan((3, 480, 640), buffers=START_BUFFERS, share=START_SHARE, reach=2, memory_gib=0.6)
    refined = chunk_plan((3, 480, 640), buffers=INPAINT_BUFFERS + 1, reach=2, memory_gib=0.6)
    assert (entry["chunk_frames"], entry["reach"]) == kept and kept[0] + 2 * kept[1] > sum(refined) + refined[1]
    assert entry["frames"] == 6 and all(c["refined"] is False for c in entry["chunks"])


def test_a_noisy_still_clip_denoises_better_than_its_frames_alone():
    frame = texture(40, 40, seed=3).mean(0, keepdim=True)
    video = frame.expand(8, 1, 40, 40)
    g = torch.Generator().manual_seed(4)
    noisy = (video + 25 / 255 * torch.randn(video.shape, generator=g)).clamp(0, 1)
    clean, _ = denoise(noisy, 25 / 255, QUICK_DENOISE)
    alone = torch.stack([denoise(f, 25 / 255, DenoiseSettings(iters=2))[0] for f in noisy])
    assert clean.shape == noisy.shape
    assert psnr(clean, video) > psnr(alone, video) + 2.0, (psnr(clean, video), psnr(alone, video))


def test_a_grey_clips_patches_span_two_frames_that_follow_the_camera():
    """``depth``: a grey clip's patches span two frames, as BM4D's cubes do. The second
    frame of a cube is moved by the camera's shift, so on a pan both hold the same place;
    the cubes come back to the frames exactly; and a noisy still clip denoises better with
    them than with patches of one frame."""
    clip = panned(6, 24, 32, 2).mean(1, keepdim=True)
    shifts = frame_shifts(clip)
    assert shifts[:, 1].tolist() == [0, -2, -4, -6, -8, -10]
    cubes = frame_cubes(clip, shifts, 2)
    assert cubes.shape == (6, 2, 24, 32)
    assert torch.equal(cubes[:-1, 1, :, 2:], cubes[:-1, 0, :, 2:])  # the place the camera took
    for depth in (1, 2, 3):
        assert torch.allclose(from_cubes(frame_cubes(clip, shifts, depth), shifts, depth), clip, atol=1e-6)
    assert [DenoiseSettings().for_image(c, frames=f).depth for c, f in ((1, 5), (3, 5), (1, 0))] == [2, 1, 1]
    frame = texture(40, 40, seed=3).mean(0, keepdim=True)
    video = frame.expand(8, 1, 40, 40)
    noisy = (video + 25 / 255 * torch.randn(video.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    quick = DenoiseSettings(iters=2)  # the video defaults' groups, fewer steps
    cubes, _ = denoise(noisy, 25 / 255, quick)
    flat, _ = denoise(noisy, 25 / 255, replace(quick, depth=1))
    assert psnr(cubes, video) > psnr(flat, video) + 0.2, (psnr(cubes, video), psnr(flat, video))  # 28.24 vs 27.71


def test_video_defaults_leave_what_the_user_sets():
    s = DenoiseSettings(window=9).for_image(3, frames=5)
    assert (s.window, s.reach, s.frame_window, s.group, s.iters) == (9, 9, 1, 32, 6)
    assert DenoiseSettings().for_image(3).reach == 0
    assert DenoiseSettings(solver="adam").for_video().rescale is None  # threshold's settings stay out


def test_grey_and_colour_clips_take_their_own_defaults(tmp_path):
    """A clip's groups: 32 patches from 9 frames each way, 1 px around where the camera
    takes the patch, and a 5x5 window in its own frame, unless the user says; a grey
    clip's patches are 6x6 over two frames, a colour clip's 5x5 in one. The clip command
    plans its chunks with that reach."""
    video = DenoiseSettings().for_image(1, frames=5), DenoiseSettings().for_image(3, frames=5)
    assert [(s.reach, s.frame_window, s.window, s.group, s.patch, s.depth) for s in video] == [
        (9, 1, 2, 32, 6, 2), (9, 1, 2, 32, 5, 1)
    ]  # fmt: skip
    assert DenoiseSettings(reach=2, group=40).for_image(1, frames=5).reach == 2
    assert (DenoiseSettings().for_image(1).reach, DenoiseSettings().for_image(1).window) == (0, 15)
    grey = panned(12, 24, 32, 1).mean(1, keepdim=True).expand(12, 3, 24, 32)
    write_frames(tmp_path / "grey", grey)
    write_frames(tmp_path / "colour", panned(12, 24, 32, 1))
    quick = DenoiseSettings(iters=1, group=8)
    report = jobs.denoise(jobs.DenoiseRequest((tmp_path / "grey", tmp_path / "colour"), sigma=10, settings=quick))
    assert [(e["grey"], e["reach"]) for e in report["results"]] == [(True, 9), (False, 9)]


def test_a_clip_that_opens_on_black_keeps_its_colour_after_it(tmp_path, monkeypatch):
    """Grey is decided per chunk: a colour clip whose first chunk is black frames (a fade
    in) is solved grey there and in colour after it, and written in colour throughout, its
    chunks planned with the reach grey and colour clips share. It came out grey before
    (the first chunk decided for the clip)."""
    from lrrtool.tasks import budget

    monkeypatch.setattr(budget, "MAX_CHUNK_FRAMES", 3)
    colour = panned(15, 24, 32, 1)
    colour[:12] = 0  # black frames (equal channels): the first chunk and its 9 frames of look-ahead
    write_frames(tmp_path / "fade", colour)
    quick = DenoiseSettings(iters=1, group=8)
    entry = jobs.denoise(jobs.DenoiseRequest((tmp_path / "fade",), sigma=5, settings=quick))["results"][0]
    assert (entry["grey"], entry["reach"], len(entry["chunks"])) == (False, 9, 5)
    out = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "fade.denoised").iterdir())]
    assert all(frame.ndim == 3 for frame in out)
    truth = (colour[14].permute(1, 2, 0) * 255).numpy()
    assert np.abs(out[14].astype(float) - truth).mean() < 6  # colour, not one channel of it
    assert np.ptp(out[14].astype(float), axis=2).mean() > 20


def write_frames(folder: Path, video: torch.Tensor) -> list[str]:
    folder.mkdir()
    names = [f"frame_{k:03d}.png" for k in range(video.shape[0])]
    for name, frame in zip(names, video, strict=True):
        Image.fromarray((frame.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / name)
    return names


def test_a_folder_of_frames_comes_back_as_a_folder_of_png_frames_with_the_same_names(tmp_path):
    video = panned(5, 24, 32, 1)
    names = write_frames(tmp_path / "shots", video)
    Image.fromarray(((torch.arange(24)[:, None] > 16) & (torch.arange(32) > 8)).byte().numpy() * 255).save(
        tmp_path / "m.png"
    )
    report = jobs.inpaint(
        jobs.InpaintRequest((tmp_path / "shots",), mask=tmp_path / "m.png", settings=InpaintSettings(iters=2))
    )
    entry = report["results"][0]
    out = tmp_path / "shots.inpainted"
    assert entry["output"] == str(out) and entry["frames"] == 5 and sorted(p.name for p in out.iterdir()) == names
    assert "warnings" not in entry  # 8-bit RGB frames: nothing lost
    again = jobs.inpaint(jobs.InpaintRequest((tmp_path / "shots",), mask=tmp_path / "m.png"))
    assert again["results"][0]["skipped"]  # the overwrite rule


def test_a_video_comes_back_with_its_audio_frame_count_and_rate(tmp_path):
    import imageio.v2 as imageio

    clip = clip_with_audio(tmp_path / "clip.mp4", seconds=0.8)
    result = CliRunner().invoke(
        app, ["denoise", str(clip), "--sigma", "10", "--iters", "1", "--group", "8", "--reach", "1", "-q"]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "clip.denoised.mp4"
    assert streams(out) == ["Video", "Audio"]
    reader = imageio.get_reader(out, format="ffmpeg")
    meta = reader.get_meta_data()
    assert meta["fps"] == 25 and meta["size"] == (48, 32)
    assert reader.count_frames() == 20
    reader.close()


def test_a_clip_is_refused_what_only_an_image_can_take(tmp_path):
    clip = clip_with_audio(tmp_path / "clip.mp4", seconds=0.2)
    report = jobs.inpaint(jobs.InpaintRequest((clip,), drop=0.5))
    assert "a clip is inpainted with mask" in report["results"][0]["error"]
    result = CliRunner().invoke(app, ["denoise", str(clip), "-o", str(tmp_path / "clip.png")])
    assert result.exit_code != 0 and "a video gives a video" in result.output
    Image.new("L", (20, 20), 255).save(tmp_path / "small.png")
    report = jobs.inpaint(jobs.InpaintRequest((clip,), mask=tmp_path / "small.png"))
    assert "mask is 20x20 but the image is 48x32" in report["results"][0]["error"]
    with pytest.raises(LRRError, match=r"masks\.mp4: no such file or folder"):
        jobs.inpaint(jobs.InpaintRequest((clip,), mask=tmp_path / "masks.mp4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "small.png"]  # nothing written


@pytest.mark.parametrize("iters", [2, None])
def test_a_folder_of_masks_follows_the_frames_across_chunks(tmp_path, monkeypatch, iters):
    """One mask per frame (a moving box), a clip longer than a chunk: every frame is filled
    where its own mask says, the observed pixels of every frame are kept exactly, and the
    chunks' borders lose no frame. With the start kept (no ``iters``: the boxes are holes)
    the pan shows every hidden pixel in another frame, the frames around a chunk included,
    and the fill is the truth."""
    from lrrtool.tasks import budget

    monkeypatch.setattr(budget, "MAX_CHUNK_FRAMES", 3)
    video = panned(8, 24, 32, 1)
    write_frames(tmp_path / "shots", video)
    boxes = torch.zeros(8, 3, 24, 32)
    for t in range(8):
        boxes[t, :, 8:14, 4 + 2 * t : 12 + 2 * t] = 1.0
    write_frames(tmp_path / "masks", boxes)
    report = jobs.inpaint(
        jobs.InpaintRequest((tmp_path / "shots",), mask=tmp_path / "masks", settings=InpaintSettings(iters=iters))
    )
    entry = report["results"][0]
    assert entry["frames"] == 8 and entry["chunk_frames"] == 3 and len(entry["chunks"]) == 3
    assert [c["refined"] for c in entry["chunks"]] == [iters is not None] * 3
    onto_masks = jobs.Outputs(output=tmp_path / "masks", overwrite=True)
    refused = jobs.inpaint(jobs.InpaintRequest((tmp_path / "shots",), mask=tmp_path / "masks", outputs=onto_masks))
    assert "refusing to overwrite an input" in refused["results"][0]["error"]
    out = torch.stack(
        [
            torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)
            for p in sorted((tmp_path / "shots.inpainted").iterdir())
        ]
    )
    truth = (video * 255).round()
    hidden = boxes.bool()
    assert torch.equal(out[~hidden].float(), truth[~hidden])
    assert float((out[hidden].float() - truth[hidden]).abs().mean()) < (12 if iters else 0.5)


def test_a_budget_that_cannot_hold_the_reach_lowers_it_and_says_how_much_would():
    """1080p colour at 2 GiB holds 3 frames: one of its own and one each side; a budget
    from ``frames_needed_gib`` keeps the asked reach; too little for one frame is refused."""
    from lrrtool.tasks.budget import chunk_plan, frames_needed_gib

    hd = (3, 1080, 1920)
    assert chunk_plan(hd, buffers=7, reach=4, memory_gib=2) == (1, 1)
    assert chunk_plan((3, 240, 320), buffers=7, reach=4, memory_gib=2) == (24, 4)
    enough = frames_needed_gib(hd, buffers=7, frames=12)
    assert chunk_plan(hd, buffers=7, reach=4, memory_gib=enough)[1] == 4
    with pytest.raises(LRRError, match=r"memory_gib 0\.5 is too small for 1920x1080 frames"):
        chunk_plan(hd, buffers=7, reach=4, memory_gib=0.5)


def test_what_a_folders_frames_carry_beyond_8_bit_pixels_is_said_lost(tmp_path):
    (tmp_path / "shots").mkdir()
    for k in range(3):
        Image.new("RGBA", (24, 16), (40 * k, 90, 120, 200)).save(tmp_path / "shots" / f"f{k}.png")
    report = jobs.denoise(jobs.DenoiseRequest((tmp_path / "shots",), sigma=10.0, settings=QUICK_DENOISE))
    assert report["results"][0]["warnings"] == [
        "the frames' alpha not kept: a folder's frames are read as 8-bit pixels"
    ]


def run_here(jobs_, work, finished):
    """A :data:`lrrtool.jobs.videos.TaskRunner` in this process, last job first (tasks end in any order)."""
    for k in reversed(range(len(jobs_))):
        finished(k, (work(*jobs_[k]), None))


def test_segments_give_the_frames_of_the_run_in_one_process(tmp_path, monkeypatch):
    """A clip of 8 frames in chunks of 3, with per-frame masks, split into segments of 5
    frames, rounded up to 2 chunks (6 + 2 frames): each segment reads the frames and masks
    before it, so every frame is the one the run in one process writes, and the report
    counts every chunk once."""
    from lrrtool.jobs import clips, restore
    from lrrtool.jobs.images import Placement
    from lrrtool.tasks import budget

    monkeypatch.setattr(budget, "MAX_CHUNK_FRAMES", 3)
    video = panned(8, 24, 32, 1)
    names = write_frames(tmp_path / "shots", video)
    boxes = torch.zeros(8, 3, 24, 32)
    for t in range(8):
        boxes[t, :, 8:14, 4 + 2 * t : 12 + 2 * t] = 1.0
    write_frames(tmp_path / "masks", boxes)
    settings = InpaintSettings(iters=2)
    options = {"mask": tmp_path / "masks", "place": Placement()}
    one = clips.inpaint_clip(tmp_path / "shots", tmp_path / "one", settings, **options)
    split = clips.inpaint_clip(
        tmp_path / "shots", tmp_path / "split", settings, segments=restore.Segments(run_here, frames=5), **options
    )
    assert split["segments"] == [{"segment": 1, "start": 0, "frames": 6}, {"segment": 2, "start": 6, "frames": 2}]
    assert [c["frames"] for c in split["chunks"]] == [3, 3, 2] == [c["frames"] for c in one["chunks"]]
    assert split["missing_fraction"] == one["missing_fraction"] > 0
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == names
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "split" / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks", "one", "shots", "split"]  # no scratch left


@pytest.mark.parametrize("frames", [0, 4])
def test_sparse_tiles_sum_what_unfolding_the_whole_crop_sums(monkeypatch, frames):
    """Groups around a thin hole: a tile that reads and sums only its grouped patches
    (``PatchGroups._sparse``) gives the whole crop's unfold and fold, an image's and a
    clip's, tiled or not, to float rounding."""
    from lrrtool import patches

    g = torch.Generator().manual_seed(3)
    signal = torch.rand(*((frames,) if frames else ()), 3, 30, 34, generator=g)
    select = torch.zeros(30, 34, dtype=torch.bool)
    select[10:13, 5:30] = True
    if frames:
        select = select.expand(frames, 30, 34)
    extra = {"temporal": TemporalSearch(1), "span": 2} if frames else {}
    for tile in (None, 9):
        groups = PatchGroups(signal, patch=4, group=6, stride=3, window=3, search_step=1, select=select, tile=tile,
                             batch=5, **extra)  # fmt: skip
        estimate = torch.rand_like(signal)
        runs = []
        for share in (0.0, 10.0):  # every tile dense, every tile sparse
            monkeypatch.setattr(patches, "SPARSE_ROWS", share)
            runs.append((groups.map(estimate, lambda g, _: g * 0.7), groups.average(groups.gather(estimate))))
        assert torch.allclose(runs[0][0], runs[1][0], atol=1e-6) and torch.allclose(runs[0][1], runs[1][1], atol=1e-6)


def test_the_reference_leads_its_group_when_every_candidate_is_taken():
    image = torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(3))
    index = group_indices(image, patch=3, group=9, stride=2, window=1, search_step=1)  # 9 offsets, 9 taken
    L = 10 * 10
    y, x = torch.meshgrid(torch.tensor([0, 2, 4, 6, 8, 9]), torch.tensor([0, 2, 4, 6, 8, 9]), indexing="ij")
    assert index.shape == (36, 9) and torch.equal(index[:, 0], (y * 10 + x).reshape(-1))
    assert int(index.max()) < L
