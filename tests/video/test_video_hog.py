"""HOG's SVM applied as one matrix product (`partsearch.video.hog`): OpenCV's boxes and scores."""

import numpy as np
import pytest

from partsearch.video.decode import sample_frames
from partsearch.video.hog import WINDOW, HogPyramid, group_rectangles, pyramid_scales


def _opencv(image, step):
    import cv2

    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rects, scores = hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=step)
    return np.asarray(rects, np.int64).reshape(-1, 4), np.ravel(scores)


def _sorted(rects, scores):
    order = np.lexsort(rects.T[::-1])
    return rects[order].tolist(), scores[order]


@pytest.mark.parametrize("step", [1.05, 1.1])
def test_the_pyramid_gives_opencvs_boxes_and_scores_on_the_street(street, step):
    import cv2

    frames = [f.image for f in sample_frames(street.path, fps=2.5)][:4]
    pyramid, compared = HogPyramid(), 0
    for frame in frames:
        image = cv2.resize(frame, None, fx=1.5, fy=1.5)
        want_rects, want_scores = _sorted(*_opencv(image, step))
        got_rects, got_scores = _sorted(*pyramid.detect(image, step))
        assert got_rects == want_rects
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-4)
        compared += len(want_rects)
    assert compared > 0  # the street's walkers were found, so boxes were compared


def test_a_cluster_needs_more_than_two_hits_and_keeps_its_mean_box_and_best_score():
    rects = np.array([[100, 50, 64, 128], [101, 52, 64, 128], [100, 54, 64, 128], [101, 52, 64, 128],  # alike
                      [300, 50, 64, 128], [302, 50, 64, 128]])  # only two
    boxes, scores = group_rectangles(rects, np.array([0.5, 1.5, 1.0, 0.2, 3.0, 3.0]))
    assert boxes.tolist() == [[100, 52, 64, 128]]  # mean x 100.5: OpenCV's cvRound, half to even
    assert scores.tolist() == [1.5]


def test_a_small_box_inside_a_larger_better_supported_one_is_dropped():
    big = [[100, 100, 128, 256]] * 5
    small = [[130, 150, 64, 128]] * 3
    boxes, _ = group_rectangles(np.array(big + small), np.ones(8))
    assert boxes.tolist() == [[100, 100, 128, 256]]


def test_the_pyramid_ends_with_the_last_level_that_holds_the_window():
    # As OpenCV: 200x300 shrunk by 2.25 is 89x133 (holds 64x128); by 3.375 it would be 59x89.
    assert pyramid_scales(200, 300, 1.5) == [1.0, 1.5, 2.25]
    assert pyramid_scales(50, 100, 1.1) == [1.0]  # smaller than the window: one level all the same


def test_the_level_past_the_last_is_not_scored_though_the_padding_holds_a_window(street):
    # A crop around a walker (as the motion gate passes them), 1.5x: the level after the last is
    # narrower than the window, yet with the padding a window fits there and scores a hit, which
    # OpenCV never counts (found on vtest.avi through the gate).
    import cv2

    frame = [f.image for f in sample_frames(street.path, fps=1.0)][1]
    image = cv2.resize(frame[24:196, 6:87], None, fx=1.5, fy=1.5)
    scales = pyramid_scales(image.shape[1], image.shape[0], 1.1)
    past = scales[-1] * 1.1
    beyond = cv2.resize(image, (round(image.shape[1] / past), round(image.shape[0] / past)),
                        interpolation=cv2.INTER_LINEAR_EXACT)
    assert len(HogPyramid().level_hits(beyond)[0]) > 0  # the case this test is about
    want_rects, _ = _sorted(*_opencv(image, 1.1))
    got_rects, _ = _sorted(*HogPyramid().detect(image, 1.1))
    assert got_rects == want_rects


def test_hog_gives_the_same_boxes_when_opencv_may_use_two_threads(street):
    import cv2

    from partsearch.video.detect import HogDetector

    frame = [f.image for f in sample_frames(street.path, fps=2.5)][2]
    one = [(b.xyxy, b.score) for b in HogDetector(scale=1.05)(frame)]
    cv2.setNumThreads(2)  # the levels are then scored on two threads, as OpenCV spreads them
    try:
        two = [(b.xyxy, b.score) for b in HogDetector(scale=1.05)(frame)]
    finally:
        cv2.setNumThreads(1)
    assert one and two == one
