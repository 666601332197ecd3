"""Tracking people across sampled frames with Norfair (tryolabs/norfair, BSD-3-Clause): a Kalman
filter per box corner predicts where each person is in the next sampled frame, and detections are
matched to predictions by IoU (Norfair's built-in `iou` distance, 1 - IoU).

A track is confirmed once Norfair has matched it in `INITIALIZATION_DELAY` + 1 sampled frames
without losing it; detections that never reach a confirmed track (a false positive that flashes
up for a frame) get no track id, and ingest drops them. Confirmed tracks are numbered 1, 2, ...
in the order they first appear.
"""

from __future__ import annotations

import numpy as np

from partsearch.errors import UserError
from partsearch.video.detect import PersonBox

try:
    from norfair import Detection, Tracker
except ImportError:  # pragma: no cover - depends on the installation
    Detection = Tracker = None

# A detection joins a track when its IoU with the track's predicted box is above 1 - this.
DISTANCE_THRESHOLD = 0.7
# A track lost by the detector survives this many seconds of sampled frames (at least 2 frames),
# so a person HOG misses for a moment keeps their id [ours].
KEEP_ALIVE_S = 1.0
INITIALIZATION_DELAY = 1


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
        self._objects: dict[int, object] = {}
        self._order: list[int] = []

    def update(self, boxes: list[PersonBox]) -> list[int]:
        detections = [Detection(np.array([[b.x1, b.y1], [b.x2, b.y2]], dtype=np.float64)) for b in boxes]
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
        return keys

    def track_ids(self) -> dict[int, int]:
        """Provisional key -> track id (1, 2, ... by first appearance), confirmed tracks only."""
        confirmed = [key for key in self._order if self._objects[key].id is not None]
        return {key: number for number, key in enumerate(confirmed, start=1)}
