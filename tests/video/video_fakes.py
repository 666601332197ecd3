"""Helpers for the video tests: box overlap, matching records to the ground truth, and a
detector that replays the ground truth with noise (so the tracker is tested apart from HOG)."""

from __future__ import annotations

import collections

import numpy as np

from partsearch.video.detect import PersonBox

SYNTH_FRAMES = 64
SYNTH_FPS = 10.0
# A detection matches a ground-truth figure when their boxes overlap by at least this IoU. HOG's
# boxes are wider than the figure (its window's margin), so a correct one reaches 0.5 to 0.6.
IOU_MATCH = 0.4


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(video, detections: dict[int, list[tuple]]) -> dict:
    """Ground truth vs `detections` (frame -> list of (box, track)) over the frames detected on.

    Returns `found[k]` (frames where figure k was matched, with the track id given there),
    `missed[k]` (its frames with no match) and `false` (detections matching no figure)."""
    found = collections.defaultdict(dict)
    missed = collections.defaultdict(list)
    false = []
    for frame, dets in detections.items():
        used = set()
        for k, track in enumerate(video.tracks):
            if frame not in track:
                continue
            scores = [(iou(track[frame], box), i) for i, (box, _) in enumerate(dets) if i not in used]
            best = max(scores, default=(0.0, None))
            if best[0] >= IOU_MATCH:
                used.add(best[1])
                found[k][frame] = dets[best[1]][1]
            else:
                missed[k].append(frame)
        false += [d for i, d in enumerate(dets) if i not in used]
    return {"found": found, "missed": missed, "false": false}


def dominant_share(ids: dict[int, int]) -> tuple[int, float]:
    """The most frequent track id among a figure's matched frames, and its share of them."""
    counts = collections.Counter(ids.values())
    best, n = counts.most_common(1)[0]
    return best, n / len(ids)


class ReplayDetector:
    """Returns the ground-truth boxes of the n-th frame it is called on (`frames[n]`, starting over
    after the last: one detector serves several copies of the video in turn), shifted by
    up to `jitter` pixels, each dropped with probability `drop`, plus a one-frame false positive
    at each frame of `flashes`."""

    name = "replay"
    default_min_score = 0.5

    def __init__(self, video, frames: list[int], jitter: int = 3, drop: float = 0.1, flashes=(), seed: int = 0):
        self.video, self.frames, self.jitter, self.drop, self.flashes = video, frames, jitter, drop, set(flashes)
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def __call__(self, image) -> list[PersonBox]:
        frame = self.frames[self.calls % len(self.frames)]  # the next video starts over
        self.calls += 1
        boxes = []
        for x1, y1, x2, y2 in self.video.boxes(frame):
            if self.rng.random() < self.drop:
                continue
            dx1, dy1, dx2, dy2 = self.rng.integers(-self.jitter, self.jitter + 1, size=4)
            boxes.append(PersonBox(int(x1 + dx1), int(y1 + dy1), int(x2 + dx2), int(y2 + dy2), 0.9))
        if frame in self.flashes:
            boxes.append(PersonBox(140, 10, 180, 90, 0.9))
        return boxes
