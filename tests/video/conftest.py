"""A small synthetic street video with known tracks, written once per session, and the helpers the
video tests share."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from video_fakes import SYNTH_FPS, SYNTH_FRAMES  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_opencv_thread():
    import cv2

    cv2.setNumThreads(1)


@pytest.fixture(scope="session")
def street(tmp_path_factory):
    """64 frames of 320x240 at 10 frames/s: two SynthPEDES-coloured people, about 128 px tall,
    each walking across their own half of the frame (`partsearch.video.synth`)."""
    from partsearch.video.synth import write_video

    return write_video(tmp_path_factory.mktemp("video") / "street.avi", num_frames=SYNTH_FRAMES, fps=SYNTH_FPS)
