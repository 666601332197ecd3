"""The motion gate (`partsearch.video.gate`): the detector runs where the frame moves."""

import json

import numpy as np
import pytest
from video_fakes import ReplayDetector, dominant_share, match

from partsearch.errors import DataError
from partsearch.video import gate
from partsearch.video.detect import HogDetector, PersonBox
from partsearch.video.ingest import IngestSettings, ingest, read_records

SAMPLED = list(range(0, 64, 2))
FRAMES = 24


class BrightBox:
    """Finds the one bright rectangle in the image it is given; keeps the size of each image."""

    name, default_min_score = "bright", 0.5

    def __init__(self):
        self.shapes = []

    def __call__(self, image):
        self.shapes.append(image.shape[:2])
        ys, xs = np.nonzero(image[..., 0] > 200)
        if len(ys) == 0:
            return []
        return [PersonBox(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, 1.0)]


def _walk():
    """240x320 frames of a fixed, textured background with a bright 20x60 box moving 8 px a frame."""
    rng = np.random.default_rng(0)
    background = rng.integers(40, 120, size=(240, 320, 3), dtype=np.uint8)
    for i in range(FRAMES):
        frame = background.copy()
        x = 20 + 8 * i
        frame[100:160, x:x + 20] = 255
        yield frame, (x, 100, x + 20, 160)


def test_after_warm_up_the_detector_sees_the_moving_part_and_the_whole_frame_every_full_every():
    detector = BrightBox()
    gated = gate.MotionGate(detector)
    for frame, _ in _walk():
        gated(frame)
    whole = [n for n, shape in enumerate(detector.shapes, 1) if shape == (240, 320)]
    assert whole[:gate.WARM_FRAMES] == list(range(1, gate.WARM_FRAMES + 1))
    assert len(detector.shapes) == FRAMES  # one region a frame: the box and its last place touch
    assert [n for n in whole if n > gate.WARM_FRAMES] == [n for n in range(gate.WARM_FRAMES + 1, FRAMES + 1)
                                                          if n % gate.FULL_EVERY == 0]
    assert max(gated.searched[gate.WARM_FRAMES:gate.FULL_EVERY - 1]) < 0.5


def test_boxes_found_in_a_region_are_given_in_the_frame_s_coordinates():
    gated = gate.MotionGate(BrightBox())
    for frame, truth in _walk():
        assert [b.xyxy for b in gated(frame)] == [truth]


def test_a_still_frame_is_searched_only_around_the_last_boxes():
    detector = BrightBox()
    gated = gate.MotionGate(detector)
    frame, _ = next(_walk())
    for _ in range(gate.FULL_EVERY - 1):
        gated(frame)
    assert detector.shapes[-1] != (240, 320)
    assert gated.searched[-1] < 0.3


def test_hog_behind_the_gate_finds_the_walkers_and_keeps_their_ids(street, tmp_path):
    ingest([street.path], tmp_path / "g", IngestSettings(fps=5.0, motion_gate=True),
           detector=HogDetector(scale=1.05), progress=False)
    frames = {f: [] for f in SAMPLED}
    for r in read_records(tmp_path / "g"):
        frames[r["frame"]].append((r["box"], r["track"]))
    result = match(street, frames)
    wanted = sum(1 for track in street.tracks for frame in SAMPLED if frame in track)
    assert sum(len(v) for v in result["found"].values()) / wanted >= 0.7  # the whole frame's tolerance
    ids = [dominant_share(result["found"][k]) for k in range(len(street.tracks))]
    assert all(share >= 0.9 for _, share in ids), ids


@pytest.mark.parametrize("on", [False, True])
def test_the_marker_names_the_gate_only_when_it_is_on_so_older_galleries_stay_valid(street, tmp_path, on):
    ingest([street.path], tmp_path / "g", IngestSettings(fps=5.0, motion_gate=on),
           detector=ReplayDetector(street, SAMPLED, jitter=0, drop=0.0), progress=False)
    marker = json.loads(next((tmp_path / "g" / "crops").glob("*/video.json")).read_text())
    assert ("motion_gate" in marker["settings"]) == on
    if on:
        assert marker["settings"]["motion_gate"] == gate.config()


def test_turning_the_gate_on_ingests_a_finished_video_again(street, tmp_path):
    ingest([street.path], tmp_path / "g", IngestSettings(fps=5.0),
           detector=ReplayDetector(street, SAMPLED, jitter=0, drop=0.0), progress=False)
    report = ingest([street.path], tmp_path / "g", IngestSettings(fps=5.0, motion_gate=True),
                    detector=ReplayDetector(street, SAMPLED, jitter=0, drop=0.0), progress=False)
    assert report.videos[0].status == "ingested"


def test_the_gate_with_a_torchvision_detector_is_refused_before_anything_is_written(street, tmp_path):
    with pytest.raises(DataError, match="--motion-gate.*--detector hog"):
        ingest([street.path], tmp_path / "g", IngestSettings(detector="fasterrcnn_resnet50_fpn", motion_gate=True),
               progress=False)
    assert not (tmp_path / "g").exists()


def test_behind_the_gate_a_detector_that_allows_parallel_frames_still_gets_them_one_at_a_time(street, tmp_path):
    class Parallel(ReplayDetector):
        parallel_frames = True  # the gate keeps a background model and the last boxes: it may not

    report = ingest([street.path], tmp_path / "g", IngestSettings(fps=5.0, motion_gate=True),
                    detector=Parallel(street, SAMPLED, jitter=0, drop=0.0), progress=False, workers=2)
    assert report.videos[0].workers == 1
