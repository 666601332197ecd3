"""A motion gate for a fixed camera: run the person detector only where something moves [ours].

`ingest --motion-gate`. HOG is nearly the whole cost of ingest (docs/BENCHMARKS.md, `ingest`),
and in a fixed camera's frame most pixels are a background where nobody is. The gate keeps a
background model of the video (OpenCV's MOG2 on the frame at a quarter of its size) and runs the
detector on the bounding rectangles of the padded regions that move, and around the boxes it found
in the previous sampled frame (people who stop); the first `WARM_FRAMES` sampled frames and every
`FULL_EVERY`-th are searched whole, so people who stand still long enough to become background are
found again within `FULL_EVERY` sampled frames. On a moving camera everything moves and the gate
searches (nearly) the whole frame: no gain, no loss.

Measured on `vtest.avi` (docs/VIDEO.md, "Motion gate"): ingest 1.8x faster (2.3x -> 4.2x real time
on 2 cores), at a cost: detection recall 0.88 -> 0.87, IDF1 0.68 -> 0.64, tracks holding two
people 3 -> 5. So it is off unless asked for.
"""

from __future__ import annotations

import numpy as np

from partsearch.video.detect import Detector, PersonBox, clip_boxes

WARM_FRAMES = 5  # sampled frames searched whole while the background model learns
FULL_EVERY = 10  # and then every this many
SHRINK = 4  # the background model sees the frame at 1/SHRINK of its size
HISTORY = 100  # MOG2: sampled frames the background remembers
VAR_THRESHOLD = 25.0  # MOG2: squared Mahalanobis distance above which a pixel is foreground
MIN_BLOB_HEIGHT = 24  # moving regions lower than this (frame pixels) are noise
PAD = 0.1  # a region is widened by this share of its height on every side,
PAD_Y, PAD_X = 24, 12  # plus these many pixels (the detector's window needs context)
MIN_W, MIN_H = 32, 64  # and is at least this big before padding


def config() -> dict:
    """The gate's settings, stored in each video's `video.json`."""
    return {"warm_frames": WARM_FRAMES, "full_every": FULL_EVERY, "shrink": SHRINK, "history": HISTORY,
            "var_threshold": VAR_THRESHOLD, "min_blob_height": MIN_BLOB_HEIGHT, "pad": PAD,
            "pad_y": PAD_Y, "pad_x": PAD_X, "min_w": MIN_W, "min_h": MIN_H}


class MotionGate:
    """`detector` run on the moving parts of each frame of one video; make one per video (it keeps
    that video's background model). Same call, name, scores and boxes as `detector`."""

    def __init__(self, detector: Detector):
        import cv2

        self.detector = detector
        self.name, self.default_min_score = detector.name, detector.default_min_score
        self._background = cv2.createBackgroundSubtractorMOG2(
            history=HISTORY, varThreshold=VAR_THRESHOLD, detectShadows=False)
        self._frames = 0
        self._last: list[PersonBox] = []
        self.searched = []  # share of each frame's pixels the detector ran on

    def __call__(self, frame: np.ndarray) -> list[PersonBox]:
        import cv2

        height, width = frame.shape[:2]
        small = cv2.resize(frame, (max(1, width // SHRINK), max(1, height // SHRINK)), interpolation=cv2.INTER_AREA)
        moving = self._background.apply(small)
        self._frames += 1
        if self._frames <= WARM_FRAMES or self._frames % FULL_EVERY == 0:
            found = self.detector(frame)
            self.searched.append(1.0)
        else:
            found, area = self._detect_in(frame, self._regions(moving, width, height))
            self.searched.append(area / (width * height))
        self._last = found
        return found

    def _regions(self, moving: np.ndarray, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The rectangles `(x, y, w, h)` to search: moving blobs and the last boxes, padded, merged
        where they touch."""
        import cv2

        moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
        moving = cv2.dilate(moving, np.ones((5, 5), np.uint8))
        _, _, stats, _ = cv2.connectedComponentsWithStats(moving)
        rects = [(x * SHRINK, y * SHRINK, (x + w) * SHRINK, (y + h) * SHRINK)
                 for x, y, w, h, area in stats[1:] if area >= 4 and h * SHRINK >= MIN_BLOB_HEIGHT]
        rects += [box.xyxy for box in self._last]
        mask = np.zeros((height, width), np.uint8)
        for x1, y1, x2, y2 in rects:
            h, w = max(y2 - y1, MIN_H), max(x2 - x1, MIN_W)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            half_h, half_w = h / 2 + PAD * h + PAD_Y, w / 2 + PAD * h + PAD_X
            mask[max(0, int(cy - half_h)):max(0, int(cy + half_h)), max(0, int(cx - half_w)):max(0, int(cx + half_w))] = 1
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        return [(int(x), int(y), int(w), int(h)) for x, y, w, h, _ in stats[1:]]

    def _detect_in(self, frame: np.ndarray, regions) -> tuple[list[PersonBox], int]:
        boxes, scores, area = [], [], 0
        for x, y, w, h in regions:
            area += w * h
            for box in self.detector(np.ascontiguousarray(frame[y:y + h, x:x + w])):
                boxes.append((box.x1 + x, box.y1 + y, box.x2 + x, box.y2 + y))
                scores.append(box.score)
        return clip_boxes(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                          frame.shape[1], frame.shape[0]), area
