"""Tracking people across sampled frames with Norfair (tryolabs/norfair, BSD-3-Clause): a Kalman
filter per box corner predicts where each person is in the next sampled frame, and detections are
matched to predictions by `box_distance`: how far apart the boxes' centres are, in box heights,
how different their heights, and how different their colours.

A track is confirmed once Norfair has matched it in `INITIALIZATION_DELAY` + 1 sampled frames
without losing it; detections that never reach a confirmed track (a false positive that flashes
up for a frame) get no track id, and ingest drops them. Confirmed tracks are numbered 1, 2, ...
in the order they first appear. Given the frames' pixels, the tracker also keeps each box's colour
signature, and `track_ids(stitch_fragments=True)` cuts a track where it passed from one person to
another who met them and joins the fragments of one person's walk (`partsearch.video.stitch`) before
numbering; `reidentify_people=True` then joins the walks of a person who comes back into view. A
box's track is then `ids[tracker.key_at(key, time)]`: after a cut, the later boxes of a
provisional key have a key of their own.
"""

from __future__ import annotations

import numpy as np

from partsearch.errors import UserError
from partsearch.video.detect import PersonBox
from partsearch.video.stitch import Fragment, appearance, bhattacharyya, reidentify, split_handoffs, stitch

try:
    from norfair import Detection, Tracker
    from norfair.distances import ScalarDistance
except ImportError:  # pragma: no cover - depends on the installation
    Detection = Tracker = ScalarDistance = None

# A detection joins a track when its `box_distance` to the track's predicted box is below this.
# Stricter than a walker's step needs: where two people meet, a track left for a fragment is
# joined again by stitching or re-identification, a track run on into someone else is not
# (vtest.avi: IDF1 0.71 at 0.7, 0.81 at 0.55; docs/VIDEO.md).
DISTANCE_THRESHOLD = 0.55
# A track lost by the detector survives this many seconds of sampled frames (at least 2 frames),
# so a person HOG misses for a moment keeps their id [ours].
KEEP_ALIVE_S = 1.0
INITIALIZATION_DELAY = 1
APPEARANCE_WEIGHT = 0.5


def box_distance(detection, tracked) -> float:
    """How far a detection is from a track's predicted box [ours]: the distance between their
    centres in box heights, plus |log| of their height ratio, plus `APPEARANCE_WEIGHT` times the
    colour distance to the track's last box when both have a signature (`stitch.bhattacharyya`).

    At 5 sampled frames/s a walker 60 px tall moves about half a box width between frames, so the
    IoU of their boxes (Norfair's `iou`) is about 0.3, near any usable cut-off, and 0 after a missed
    frame; the centre distance grows smoothly instead. On vtest.avi: IDF1 0.60 against 0.53 for
    IoU alone, unstitched (docs/VIDEO.md)."""
    (ax1, ay1), (ax2, ay2) = detection.points
    (bx1, by1), (bx2, by2) = tracked.estimate
    ah, bh = max(1.0, ay2 - ay1), max(1.0, abs(by2 - by1))
    distance = float(np.hypot((ax1 + ax2 - bx1 - bx2) / 2, (ay1 + ay2 - by1 - by2) / 2) / ((ah + bh) / 2))
    distance += abs(float(np.log(ah / bh)))
    last = tracked.last_detection.embedding
    if detection.embedding is not None and last is not None:
        distance += APPEARANCE_WEIGHT * bhattacharyya(detection.embedding, last)
    return distance


class PersonTracker:
    """Norfair's `Tracker` over `PersonBox`es, at `fps` sampled frames per second.

    `update(boxes)` returns one provisional key per box (Norfair's `initializing_id`); once the
    video is done, `track_ids()` maps the keys of confirmed tracks to track ids 1, 2, ..."""

    def __init__(self, fps: float):
        if Tracker is None:
            raise UserError("the Norfair tracker is not installed; run `make install`, or "
                            "`pip install --no-deps norfair` next to filterpy and scipy (docs/VIDEO.md)")
        hit_counter_max = max(INITIALIZATION_DELAY + 1, round(KEEP_ALIVE_S * fps))
        self._tracker = Tracker(distance_function="iou", distance_threshold=DISTANCE_THRESHOLD,
                                hit_counter_max=hit_counter_max, initialization_delay=INITIALIZATION_DELAY)
        # Norfair logs a warning for every tracker built on a plain function; its public attribute
        # takes the same ScalarDistance wrapper it would have built, without the warning.
        self._tracker.distance_function = ScalarDistance(box_distance)
        self._objects: dict[int, object] = {}
        self._order: list[int] = []
        self._fragments: dict[int, Fragment] = {}
        self._frame: tuple[int, int] | None = None  # (width, height) of the frames `update` saw
        self._first: dict[int, float] = {}  # provisional key -> the time it was first tracked
        self._cuts: dict[int, tuple[float, int]] = {}  # the last `track_ids`' `split_handoffs`

    def update(self, boxes: list[PersonBox], image: np.ndarray | None = None, time: float = 0.0) -> list[int]:
        """Provisional keys of `boxes` (-1: not tracked); `image` (BGR `(H, W, 3)`, the frame the
        boxes are in, at `time` seconds) gives them colour signatures for stitching."""
        signatures = [None if image is None else appearance(image[b.y1:b.y2, b.x1:b.x2]) for b in boxes]
        if image is not None:
            self._frame = (image.shape[1], image.shape[0])
        detections = [Detection(np.array([[b.x1, b.y1], [b.x2, b.y2]], dtype=np.float64), embedding=sig)
                      for b, sig in zip(boxes, signatures)]
        self._tracker.update(detections=detections)
        keys = [-1] * len(boxes)
        position = {id(d): i for i, d in enumerate(detections)}
        for obj in self._tracker.tracked_objects:
            i = position.get(id(obj.last_detection))
            if i is not None and obj.last_detection is detections[i]:
                keys[i] = obj.initializing_id
                if obj.initializing_id not in self._objects:
                    self._objects[obj.initializing_id] = obj
                    self._order.append(obj.initializing_id)
                    self._first[obj.initializing_id] = time
                if signatures[i] is not None:
                    self._fragments.setdefault(obj.initializing_id, Fragment(obj.initializing_id)).add(
                        time, boxes[i].xyxy, signatures[i])
        return keys

    def track_ids(self, stitch_fragments: bool = False, reidentify_people: bool = False) -> dict[int, int]:
        """Key -> track id (1, 2, ... by first appearance), confirmed tracks only; with
        `stitch_fragments`, a fragment that passed from one person to another is cut in two, the
        later part under a key of its own (`key_at`), and the fragments `stitch` joins share an id
        (those `update` saw pixels of); with `reidentify_people` too, the stitched tracks
        `reidentify` joins."""
        confirmed = [key for key in self._order if self._objects[key].id is not None]
        start = {key: self._first[key] for key in confirmed}
        seen = [self._fragments[key] for key in confirmed if key in self._fragments]
        self._cuts = {}
        if stitch_fragments:
            seen, self._cuts = split_handoffs(seen, max(self._objects, default=0) + 1, self._frame)
            start.update({later: time for time, later in self._cuts.values()})
        units = sorted(start, key=start.__getitem__)  # stable: ties keep the order they were tracked in
        root = {key: key for key in units}
        if stitch_fragments:
            root.update(stitch(seen, self._frame, last=self._cuts))
        if reidentify_people:
            chains: dict[int, list[Fragment]] = {}
            for fragment in seen:
                chains.setdefault(root[fragment.key], []).append(fragment)
            person = reidentify([Fragment.joined(key, parts) for key, parts in chains.items()],
                                {(root[key], root[later]) for key, (_, later) in self._cuts.items()})
            root = {key: person.get(root[key], root[key]) for key in units}
        numbers: dict[int, int] = {}
        for key in units:
            numbers.setdefault(root[key], len(numbers) + 1)
        return {key: numbers[root[key]] for key in units}

    def key_at(self, key: int, time: float) -> int:
        """The key under which the last `track_ids` numbered the box of provisional `key` at `time`:
        `key`, or the key of its later part when `track_ids` cut it before `time`."""
        cut = self._cuts.get(key)
        return cut[1] if cut is not None and time >= cut[0] else key
