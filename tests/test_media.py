"""The media package: files and folders (atomic, race-safe), images, videos in chunks,
lossless parts joined."""

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
