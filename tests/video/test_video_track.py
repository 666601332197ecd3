"""Tracking through Norfair, apart from the detector: ground-truth boxes replayed with jitter and
missed detections, plus one-frame false positives."""

from video_fakes import ReplayDetector, dominant_share, match

from partsearch.video.track import PersonTracker

# One id per person across at least this share of the frames where the person was detected.
MIN_ID_SHARE = 0.9


def _track(street, frames, **noise):
    detector = ReplayDetector(street, frames, **noise)
    tracker = PersonTracker(fps=5.0)
    seen = {}
    for frame in frames:
        boxes = detector(None)
        seen[frame] = [(b.xyxy, key) for b, key in zip(boxes, tracker.update(boxes))]
    ids = tracker.track_ids()
    return {frame: [(box, ids.get(key)) for box, key in dets] for frame, dets in seen.items()}


def test_each_person_keeps_one_track_id_through_jitter_and_missed_detections(street):
    detections = _track(street, list(range(0, 64, 2)), jitter=4, drop=0.15)
    result = match(street, detections)
    ids = []
    for k in range(len(street.tracks)):
        track, share = dominant_share(result["found"][k])
        assert share >= MIN_ID_SHARE, f"person {k}: track {track} on only {share:.0%} of their frames"
        ids.append(track)
    assert len(set(ids)) == len(ids) and None not in ids


def test_a_one_frame_false_positive_gets_no_track_id(street):
    detections = _track(street, list(range(0, 64, 2)), jitter=0, drop=0.0, flashes={20, 40})
    false = match(street, detections)["false"]
    assert len(false) == 2 and all(track is None for _, track in false)


def test_track_ids_count_from_one_in_order_of_first_appearance(street):
    detections = _track(street, list(range(0, 64, 2)), jitter=0, drop=0.0)
    first = {}
    for frame in sorted(detections):
        for _, track in detections[frame]:
            first.setdefault(track, frame)
    assert sorted(first, key=first.get) == [1, 2]
