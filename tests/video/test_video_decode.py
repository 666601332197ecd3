"""Frame sampling and the errors a damaged video gives."""

import pytest

from partsearch.errors import DataError
from partsearch.video.decode import VideoError, expected_samples, find_videos, open_video, sample_frames


def test_sampling_keeps_one_frame_per_period_with_its_time(street):
    frames = list(sample_frames(street.path, fps=2.5))  # a 10 frames/s video: every 4th frame
    assert [f.index for f in frames] == list(range(0, 64, 4))
    assert [f.time for f in frames] == pytest.approx([i / 10 for i in range(0, 64, 4)])
    assert frames[0].image.shape == (240, 320, 3)


def test_sampling_at_a_rate_that_does_not_divide_the_video_rate_stays_on_schedule(street):
    indices = [f.index for f in sample_frames(street.path, fps=3.0)]  # every 3.33 frames
    assert indices == [0, 4, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40, 44, 47, 50, 54, 57, 60]
    assert expected_samples(open_video(street.path)[1], 3.0) == len(indices)


def test_no_rate_or_a_rate_above_the_video_keeps_every_frame(street):
    assert len(list(sample_frames(street.path, fps=None))) == 64
    assert len(list(sample_frames(street.path, fps=30.0))) == 64


def test_a_truncated_video_is_an_error_naming_the_file_and_how_far_it_decoded(street, tmp_path):
    cut = tmp_path / "cut.avi"
    data = street.path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match=r"cut\.avi: truncated or damaged: decoding stopped at frame \d+ of the 64"):
        list(sample_frames(cut, fps=5.0))


def test_a_file_that_is_not_a_video_is_an_error_naming_it(tmp_path):
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video\n" * 100)
    with pytest.raises(VideoError, match=r"notes\.mp4: not a video OpenCV can decode"):
        list(sample_frames(junk, fps=5.0))


def test_an_empty_file_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty\.avi"):
        list(sample_frames(empty, fps=5.0))


def test_folders_are_searched_recursively_for_videos_and_named_relative_to_the_folder(tmp_path):
    for rel in ("cam2/b.mp4", "cam1/a.AVI", "cam1/notes.txt", ".hidden/c.mp4", "cam1/.d.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [name for _, name in find_videos([tmp_path])] == ["cam1/a.AVI", "cam2/b.mp4"]
    assert find_videos([tmp_path / "cam1" / "notes.txt"])[0][1] == "notes.txt"  # a file is taken as given


def test_a_missing_path_or_a_folder_without_videos_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        find_videos([tmp_path / "nope.mp4"])
    with pytest.raises(DataError, match="no video files in this folder"):
        find_videos([tmp_path])
