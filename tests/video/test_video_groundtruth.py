"""Tracks and detections scored against a ground truth (`partsearch.video.groundtruth`)."""

import pytest

from partsearch.errors import DataError
from partsearch.video.groundtruth import detection_scores, read_mot, tracking_scores, write_mot

FPS = 10.0


def _walk(person: int, frames, x0: float, step: float = 5.0):
    """A person walking right, one box per frame: {frame: (person, box)}."""
    return {f: (person, (x0 + step * f, 100.0, x0 + step * f + 40, 200.0)) for f in frames}


def _frames(*walks):
    out = {}
    for walk in walks:
        for f, entry in walk.items():
            out.setdefault(f, []).append(entry)
    return out


def _relabel(walk, ident):
    return {f: (ident, box) for f, (_, box) in walk.items()}


def test_a_mot_file_round_trips_with_frames_counted_from_one(tmp_path):
    gt = _frames(_walk(1, range(0, 30, 10), 0), _walk(2, [10], 300))
    write_mot(tmp_path / "gt.txt", gt)
    assert (tmp_path / "gt.txt").read_text().splitlines()[0] == "1,1,0,100,40,100,1,-1,-1,-1"
    assert read_mot(tmp_path / "gt.txt") == gt


def test_a_bad_mot_line_is_named_by_file_and_line(tmp_path):
    (tmp_path / "gt.txt").write_text("1,1,0,0,10,10,1,-1,-1,-1\n2,1,zero,0,10,10\n")
    with pytest.raises(DataError, match=r"gt.txt:2: not a MOTChallenge line"):
        read_mot(tmp_path / "gt.txt")


def test_tracks_that_follow_every_person_score_one_track_per_pass_and_full_idf1():
    a, b = _walk(1, range(0, 40, 2), 0), _walk(2, range(0, 40, 2), 400)
    scores = tracking_scores(_frames(a, b), _frames(_relabel(a, 7), _relabel(b, 8)), FPS)
    assert scores["idf1"] == pytest.approx(1.0) and scores["mota"] == pytest.approx(1.0)
    assert (scores["tracks_per_pass"], scores["mixed_tracks"], scores["id_switches"]) == (1.0, 0, 0)


def test_a_person_split_in_two_tracks_counts_two_tracks_for_that_pass():
    a = _walk(1, range(0, 40, 2), 0)
    first, second = {f: v for f, v in a.items() if f < 20}, {f: v for f, v in a.items() if f >= 20}
    scores = tracking_scores(_frames(a), _frames(_relabel(first, 1), _relabel(second, 2)), FPS)
    assert scores["tracks_per_pass"] == 2.0 and scores["id_switches"] == 1 and scores["idf1"] < 0.6


def test_a_track_that_jumps_to_another_person_for_over_a_second_is_mixed():
    a, b = _walk(1, range(0, 40, 2), 0), _walk(2, range(0, 40, 2), 400)
    jumped = {f: (5, (b if f >= 20 else a)[f][1]) for f in range(0, 40, 2)}
    rest = {f: (6, (a if f >= 20 else b)[f][1]) for f in range(0, 40, 2)}
    scores = tracking_scores(_frames(a, b), _frames(jumped, rest), FPS)
    assert scores["mixed_tracks"] == 2


def test_a_person_gone_for_more_than_three_seconds_comes_back_on_a_new_pass():
    a = _walk(1, list(range(0, 20, 2)) + list(range(60, 80, 2)), 0, step=1.0)
    scores = tracking_scores(_frames(a), _frames(_relabel(a, 3)), FPS)
    assert scores["passes"] == 2 and scores["tracks_per_pass"] == 1.0


def test_detection_precision_and_recall_count_one_to_one_matches_at_iou_half():
    gt = _frames(_walk(1, [0, 10], 0), _walk(2, [0, 10], 400))
    boxes = {0: [(0, 100, 40, 200), (2, 100, 42, 200), (600, 0, 640, 100)], 10: [(450, 100, 490, 200)]}
    scores = detection_scores(gt, boxes)
    assert (scores["true"], scores["false"], scores["missed"]) == (2, 2, 2)
    assert scores["precision"] == pytest.approx(0.5) and scores["recall"] == pytest.approx(0.5)
