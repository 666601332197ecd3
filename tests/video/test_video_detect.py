"""The detectors: HOG on the synthetic street, torchvision detectors from a local weights file."""

import pytest
from video_fakes import IOU_MATCH, match

from partsearch.video.decode import sample_frames
from partsearch.video.detect import DetectorError, HogDetector, TorchvisionDetector, build_detector

# HOG misses a walker in some poses (feet close together, low-contrast legs): docs/VIDEO.md.
HOG_MIN_RECALL = 0.7
# The street's drawn figures match HOG's template in a narrower band of sizes than real people do:
# the default pyramid step (1.1, chosen on vtest.avi) steps over it in some frames, 1.05 does not.
STREET_SCALE = 1.05


def test_hog_finds_the_walkers_of_the_synthetic_street(street):
    detector = HogDetector(scale=STREET_SCALE)
    detections = {f.index: [(b.xyxy, None) for b in detector(f.image) if b.score >= detector.default_min_score]
                  for f in sample_frames(street.path, fps=2.5)}
    result = match(street, detections)
    wanted = sum(1 for track in street.tracks for frame in detections if frame in track)
    found = sum(len(v) for v in result["found"].values())
    assert found / wanted >= HOG_MIN_RECALL, f"HOG matched {found} of {wanted} figures at IoU >= {IOU_MATCH}"
    assert len(result["false"]) <= 1


def test_hog_boxes_lie_inside_the_frame_with_the_exclusive_end_convention(street):
    frame = next(iter(sample_frames(street.path, fps=1.0))).image
    for box in HogDetector()(frame):
        assert 0 <= box.x1 < box.x2 <= 320 and 0 <= box.y1 < box.y2 <= 240


@pytest.fixture(scope="module")
def ssdlite_weights(tmp_path_factory):
    """An untrained SSDlite with COCO's 91 classes, saved the way torchvision names its files."""
    import torch
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path_factory.mktemp("weights") / "ssdlite320_mobilenet_v3_large_coco-test.pth"
    torch.save(model.state_dict(), path)
    return path


def test_a_torchvision_detector_loads_from_a_local_file_and_returns_person_boxes(ssdlite_weights, street):
    detector = build_detector(str(ssdlite_weights))
    assert isinstance(detector, TorchvisionDetector)
    assert detector.name == f"ssdlite320_mobilenet_v3_large:{ssdlite_weights.name}"
    frame = next(iter(sample_frames(street.path, fps=1.0))).image
    for box in detector(frame):
        assert 0 <= box.x1 < box.x2 <= 320 and 0 <= box.y1 < box.y2 <= 240 and 0 <= box.score <= 1


def test_name_colon_path_picks_the_architecture_whatever_the_file_is_called(ssdlite_weights, tmp_path):
    renamed = tmp_path / "my-detector.pt"
    renamed.write_bytes(ssdlite_weights.read_bytes())
    assert build_detector(f"ssdlite320_mobilenet_v3_large:{renamed}").name.startswith("ssdlite320")
    with pytest.raises(DetectorError, match="cannot tell the architecture from the file name"):
        build_detector(str(renamed))


def test_weights_of_another_architecture_are_refused_with_a_clear_message(ssdlite_weights, tmp_path):
    with pytest.raises(DetectorError, match="do not fit fasterrcnn_mobilenet_v3_large_320_fpn"):
        build_detector(f"fasterrcnn_mobilenet_v3_large_320_fpn:{ssdlite_weights}")


def test_an_unknown_detector_name_lists_the_choices():
    with pytest.raises(DetectorError, match="unknown detector; use hog, a torchvision detector"):
        build_detector("yolo")


def test_a_detector_name_whose_weights_are_not_cached_fails_offline_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DetectorError, match=r"not in the torch hub cache .* pass --detector ssdlite320_mobilenet_v3_large:PATH"):
        build_detector("ssdlite320_mobilenet_v3_large")


def test_suppression_between_equal_scores_keeps_the_same_box_whatever_the_input_order():
    import numpy as np

    from partsearch.video.detect import clip_boxes

    boxes = np.array([[10, 10, 50, 100], [12, 10, 52, 100], [200, 10, 240, 100]], dtype=np.float32)
    scores = np.array([1.0, 1.0, 0.5], dtype=np.float32)
    first = clip_boxes(boxes, scores, 320, 240)
    second = clip_boxes(boxes[[1, 0, 2]], scores[[1, 0, 2]], 320, 240)
    assert first == second and len(first) == 2
