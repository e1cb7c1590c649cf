"""The media package: files and folders (atomic, race-safe), images, videos in chunks,
lossless parts joined."""

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from lrrtool import media
from lrrtool.errors import LRRError


def read_video(path) -> torch.Tensor:
    """Every frame of a video file as float ``(T, H, W, C)`` in 0..255."""
    import imageio.v2 as imageio
    import numpy as np

    return torch.from_numpy(np.stack([frame for frame in imageio.get_reader(path, format="ffmpeg")])).float()


@pytest.mark.parametrize(
    ("count", "chunk", "max_frames", "expected"),
    [
        (23, 5, None, [(0, 7), (5, 12), (10, 17), (15, 22), (20, 23)]),
        (22, 5, None, [(0, 7), (5, 12), (10, 17), (15, 22), (20, 22)]),  # the file ends on a look-ahead
        (22, 5, 20, [(0, 7), (5, 12), (10, 17), (15, 22)]),  # the look-ahead runs past max_frames
        (22, 5, 12, [(0, 7), (5, 12), (10, 14)]),
        (4, 5, None, [(0, 4)]),
        (30, 9, None, [(0, 11), (9, 20), (18, 29), (27, 30)]),  # staged batches across the carried frames
        (21, 5, None, [(0, 7), (5, 12), (10, 17), (15, 21), (20, 21)]),  # the rest holds over a chunk
        (30, 5, 19, [(0, 7), (5, 12), (10, 17), (15, 21)]),
    ],
)
def test_chunks_with_a_look_ahead_hold_the_next_chunks_first_frames(tmp_path, count, chunk, max_frames, expected):
    """``lookahead=2``: chunk ``k`` holds frames ``k * chunk`` to ``(k + 1) * chunk + 2``."""
    for t in range(count):
        Image.new("L", (6, 4), 5 * t).save(tmp_path / f"{t:03d}.png")
    chunks = media.read_video_chunks(tmp_path, chunk_frames=chunk, max_frames=max_frames, lookahead=2, raw=True)
    values = [c[:, 0, 0, 0].tolist() for c, _ in chunks]
    assert values == [[5 * t for t in range(a, b)] for a, b in expected]


def test_an_output_folder_made_meanwhile_by_a_parallel_task_is_used(tmp_path, monkeypatch):
    """Two tasks writing into one new folder: the one whose mkdir comes second finds the
    folder there (the race that failed a --ray batch one run in a few), uses it and does
    not count it as its own to remove; a file in the way is still an error."""
    target = tmp_path / "out" / "deeper"
    real_missing = media.files._missing_folders

    def raced(folder):  # both folders missing when looked at, one made before the mkdir
        missing = real_missing(folder)
        (tmp_path / "out").mkdir()
        return missing

    monkeypatch.setattr(media.files, "_missing_folders", raced)
    assert media.make_folder(target) == [target] and target.is_dir()
    monkeypatch.setattr(media.files, "_missing_folders", lambda folder: ([folder], None))
    (tmp_path / "file").write_text("x")
    with pytest.raises(LRRError, match="cannot create the folder"):
        media.make_folder(tmp_path / "file")


def test_lossless_parts_joined_are_one_encode_of_the_whole(tmp_path):
    """Lossless parts (colour and grey) hold their frames exactly; joined with a preset they
    decode to exactly what one encode of the whole clip gives (no key frame at a border);
    without one they are copied; a join that misses frames leaves no file."""
    from test_separate import planted_clip

    video, _, _ = planted_clip(frames=30, height=48, width=63)  # an odd width is padded alike
    for channels in (3, 1):
        clip = video[:, :channels]
        whole = media.VideoWriter(tmp_path / f"whole{channels}.mp4", 25.0)
        whole.append(clip)
        whole.close()
        parts, lossy = [], []
        for k, piece in enumerate(clip.split(12)):
            for lossless, kept in ((True, parts), (False, lossy)):
                writer = media.VideoWriter(tmp_path / f"part{channels}{k}{lossless}.mp4", 25.0, lossless=lossless)
                writer.append(piece)
                writer.close()
                kept.append(writer.path)
            decoded = read_video(parts[-1])[:, :, :63].permute(0, 3, 1, 2)[:, :channels]
            assert torch.equal(decoded.to(torch.uint8), piece)
        joined = media.join_videos(parts, tmp_path / f"joined{channels}.mp4", frames=30, fps=25.0, preset="veryfast")
        assert torch.equal(read_video(joined), read_video(whole.path))
        copied = media.join_videos(lossy, tmp_path / f"copied{channels}.mp4", frames=30, fps=25.0)
        assert read_video(copied).shape == read_video(whole.path).shape
    with pytest.raises(LRRError, match="cannot join the segments"):
        media.join_videos(parts, tmp_path / "short.mp4", frames=40, fps=25.0, preset="veryfast")
    assert not (tmp_path / "short.mp4").exists() and not list(tmp_path.glob(".short*"))


# ------------------------------------------------------------------ what an image file carries
@functools.cache
def sRGB_profile() -> bytes:
    """One sRGB profile for the whole run: lcms stamps a profile with the time it is made,
    so two made a minute apart differ in their header."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_on_read_as_pillow_displays_it(tmp_path, orientation):
    from PIL import ImageOps

    stored = Image.fromarray((np.arange(5 * 7 * 3).reshape(5, 7, 3) * 3).astype(np.uint8))
    exif = stored.getexif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "o.png", exif=exif.tobytes())
    shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    image, info = media.read_image_info(tmp_path / "o.png")
    assert np.array_equal((image * 255).round().byte().permute(1, 2, 0).numpy(), shown)
    assert info.orientation == orientation


def test_a_phone_jpeg_comes_out_upright_with_its_icc_profile_and_exif(tmp_path):
    """A portrait JPEG stored landscape (Orientation 6) with an ICC profile: read upright;
    written as PNG upright, orientation 1, the profile and the other EXIF tags kept."""
    stored = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3)).astype(np.uint8))
    exif = stored.getexif()
    exif[0x0112], exif[0x010F] = 6, "PhoneMaker"
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), icc_profile=sRGB_profile())
    image, info = media.read_image_info(tmp_path / "phone.jpg")
    assert image.shape[-2:] == (32, 24)  # displayed portrait
    media.write_image(tmp_path / "out.png", image, info=info)
    out = Image.open(tmp_path / "out.png")
    assert out.size == (24, 32) and out.info["icc_profile"] == sRGB_profile()
    assert out.getexif()[0x0112] == 1 and out.getexif()[0x010F] == "PhoneMaker"
    assert media.image_losses(tmp_path / "out.png", info) == []
    assert media.image_losses(tmp_path / "out.bmp", info) == [
        "EXIF not kept: BMP cannot hold it", "ICC profile not kept: BMP cannot hold it"
    ]  # fmt: skip


def test_a_mask_drawn_at_the_displayed_size_matches_the_upright_image(tmp_path):
    stored = Image.new("RGB", (32, 24), "grey")
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    Image.new("L", (24, 32), 0).save(tmp_path / "mask.png")  # portrait, as shown
    image = media.read_image(tmp_path / "phone.jpg")
    assert media.read_mask(tmp_path / "mask.png", tuple(image.shape[-2:])).shape == (32, 24)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_passes_through_unchanged(tmp_path, mode):
    channels = 4 if mode == "RGBA" else 2
    array = np.random.default_rng(1).integers(0, 256, (6, 9, channels)).astype(np.uint8)
    Image.fromarray(array, mode).save(tmp_path / "in.png")
    image, info = media.read_image_info(tmp_path / "in.png")
    assert image.shape[0] == channels - 1 and info.alpha.shape == (1, 6, 9)
    media.write_image(tmp_path / "out.png", image, info=info)
    assert Image.open(tmp_path / "out.png").mode == mode
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), array)
    assert media.image_losses(tmp_path / "out.jpg", info) == ["alpha not kept: JPEG cannot hold it"]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("colour", [True, False])
def test_sixteen_bits_in_sixteen_bits_out(tmp_path, suffix, colour):
    import cv2

    shape = (6, 9, 3) if colour else (6, 9)
    array = np.random.default_rng(2).integers(0, 65536, shape).astype(np.uint16)
    cv2.imwrite(str(tmp_path / f"in{suffix}"), array[:, :, ::-1] if colour else array)
    image, info = media.read_image_info(tmp_path / f"in{suffix}")
    assert info.bits == 16
    assert np.array_equal((image * 65535).round().numpy().astype(np.uint16).transpose(1, 2, 0).squeeze(), array)
    media.write_image(tmp_path / f"out{suffix}", image, info=info)
    back = cv2.imread(str(tmp_path / f"out{suffix}"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back[:, :, ::-1] if colour else back, array)
    assert media.image_losses(tmp_path / "out.jpg", info) == ["16 bits not kept: JPEG cannot hold it"]


def test_odd_sized_videos_keep_their_size_written_and_joined(tmp_path):
    """A 33x21 clip is written 33x21 (4:4:4 chroma where 4:2:0 needs even sides), and so
    is a join of lossless parts encoded once; the frames survive at x264's quality."""
    coarse = torch.rand(12, 3, 4, 6, generator=torch.Generator().manual_seed(4))
    frames = (torch.nn.functional.interpolate(coarse, size=(21, 33), mode="bilinear") * 255).round().to(torch.uint8)
    writer = media.VideoWriter(tmp_path / "odd.mp4", 25.0)
    writer.append(frames)
    writer.close()
    decoded = read_video(tmp_path / "odd.mp4")
    assert decoded.shape == (12, 21, 33, 3)
    assert float((decoded - frames.permute(0, 2, 3, 1).float()).abs().mean()) < 4  # 4:2:0 at 34x22: 7.0
    parts = []
    for k, piece in enumerate(frames.split(6)):
        part = media.VideoWriter(tmp_path / f"part{k}.mp4", 25.0, lossless=True)
        part.append(piece)
        part.close()
        parts.append(part.path)
    joined = media.join_videos(parts, tmp_path / "joined.mp4", frames=12, fps=25.0, preset="veryfast")
    assert read_video(joined).shape == (12, 21, 33, 3)
