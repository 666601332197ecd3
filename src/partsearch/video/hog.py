"""OpenCV's HOG people detector, with its linear SVM applied as one matrix product [ours: speed].

`cv2.HOGDescriptor.detectMultiScale` scores every 64x128 window of every pyramid level with a
dot product of the window's 3,780 HOG values and the SVM's weights, in OpenCV's own loop. The
window's values are the 105 overlapping 16x16 blocks it covers (7 across, 15 down, 36 values
each), and neighbouring windows share their blocks. So `HogPyramid` asks OpenCV for each level's
block histograms once (`HOGDescriptor.compute` with one window as large as the padded level),
multiplies them by the SVM's 105 block weight vectors in one matrix product, and adds the 105
shifted score maps: the same scores, summed in another order. The rest repeats
`detectMultiScale` step by step (OpenCV 4, `modules/objdetect/src/hog.cpp`): the levels and
their rounding, `INTER_LINEAR_EXACT` resizing, the padding of 8 px, hits at score >= 0, the
grouping (`HOGDescriptor::groupRectangles`: clusters of similar rectangles, more than 2 hits,
their mean box and best score, small boxes inside larger ones dropped) and the clipping to the
image.

Measured on `vtest.avi` (docs/VIDEO.md, "Detector"): the same boxes as `detectMultiScale` on
every frame checked, scores within 3e-6, in 1.4x less CPU time; `tests/video/test_video_hog.py`
checks the boxes and scores against OpenCV's on every run, so an OpenCV release that changes
its detector fails there, not in someone's footage.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

WINDOW = (64, 128)  # the people detector's window, width x height
CELL = 8  # cell size and block stride: the window stride this computation needs
BLOCK = 16
BLOCKS_X, BLOCKS_Y = (WINDOW[0] - BLOCK) // CELL + 1, (WINDOW[1] - BLOCK) // CELL + 1  # 7 x 15
BLOCK_VALUES = 36  # 4 cells x 9 orientation bins
PADDING = 8
GROUP_THRESHOLD = 2  # detectMultiScale's finalThreshold: a box needs more than this many hits
GROUP_EPS = 0.2
MAX_LEVELS = 64  # HOGDescriptor's nlevels


def pyramid_scales(width: int, height: int, step: float) -> list[float]:
    """The scales `detectMultiScale` scans an image of this size at: 1, step, step^2, ... as long
    as the image, shrunk by the scale, still holds the window (scale 1 always)."""
    scales, scale = [], 1.0
    for _ in range(MAX_LEVELS):
        if round(width / scale) < WINDOW[0] or round(height / scale) < WINDOW[1] or step <= 1:
            break
        scales.append(scale)
        scale *= step
    return scales or [1.0]


def group_rectangles(rects: np.ndarray, scores: np.ndarray, threshold: int = GROUP_THRESHOLD,
                     eps: float = GROUP_EPS) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's `HOGDescriptor::groupRectangles`: `(N, 4)` int x, y, w, h hits and their scores ->
    one box per cluster of similar hits (corners within `eps` of their mean size, transitively)
    holding more than `threshold` hits: the cluster's mean box, rounded, and its best score; a box
    inside a larger one of a cluster with more hits is dropped."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    if len(rects) == 0:
        return np.zeros((0, 4), np.int64), np.zeros(0)
    x, y, w, h = (rects[:, i].astype(np.float64) for i in range(4))
    delta = eps * (np.minimum(w[:, None], w[None]) + np.minimum(h[:, None], h[None])) * 0.5
    similar = ((np.abs(x[:, None] - x[None]) <= delta) & (np.abs(y[:, None] - y[None]) <= delta)
               & (np.abs((x + w)[:, None] - (x + w)[None]) <= delta)
               & (np.abs((y + h)[:, None] - (y + h)[None]) <= delta))
    count, labels = connected_components(csr_matrix(similar), directed=False)
    members = np.bincount(labels, minlength=count)
    mean = np.stack([np.bincount(labels, rects[:, i].astype(np.float64), count) for i in range(4)], 1)
    boxes = np.rint(mean / members[:, None]).astype(np.int64)  # cvRound: half to even
    best = np.full(count, -np.inf)
    np.maximum.at(best, labels, scores)
    supported = np.flatnonzero(members > threshold)
    kept = []
    for i in supported:
        x1, y1, bw, bh = boxes[i]
        for j in supported:
            x2, y2, w2, h2 = boxes[j]
            dx, dy = int(np.rint(w2 * eps)), int(np.rint(h2 * eps))
            if (j != i and x1 >= x2 - dx and y1 >= y2 - dy and x1 + bw <= x2 + w2 + dx
                    and y1 + bh <= y2 + h2 + dy and (members[j] > max(3, members[i]) or members[i] < 3)):
                break  # inside a larger, better supported box
        else:
            kept.append(i)
    return boxes[kept].reshape(-1, 4), best[kept]


class HogPyramid:
    """`detect(image, step)` -> `(N, 4)` int x, y, w, h boxes and their SVM scores, as
    `cv2.HOGDescriptor.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=step)` with
    OpenCV's default people detector returns them. `detect` keeps no state: one pyramid may serve
    several threads."""

    def __init__(self):
        import cv2

        svm = np.asarray(cv2.HOGDescriptor_getDefaultPeopleDetector(), np.float32).ravel()
        # The window's values run block by block, columns of blocks first: (x, y, 36).
        self._weights = np.ascontiguousarray(svm[:-1].reshape(BLOCKS_X * BLOCKS_Y, BLOCK_VALUES))
        self._bias = float(svm[-1])

    @staticmethod
    def _descriptor(size: tuple[int, int]):
        """The people detector's parameters with one window of `size` (made in microseconds)."""
        import cv2

        return cv2.HOGDescriptor(size, (BLOCK, BLOCK), (CELL, CELL), (CELL, CELL), 9, 1, -1.0,
                                 cv2.HOGDescriptor_L2Hys, 0.2, True, MAX_LEVELS, False)

    def level_hits(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The windows of one level scoring >= 0: `(N, 2)` top-left corners (image pixels; the
        padding makes them start at -8) and their scores."""
        height, width = image.shape[:2]
        # Blocks on the 8 px grid of the padded image, as far as whole blocks reach.
        span_w = BLOCK + CELL * ((width + 2 * PADDING - BLOCK) // CELL)
        span_h = BLOCK + CELL * ((height + 2 * PADDING - BLOCK) // CELL)
        if span_w < WINDOW[0] or span_h < WINDOW[1]:
            return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
        values = self._descriptor((span_w, span_h)).compute(image, winStride=(CELL, CELL), padding=(PADDING, PADDING))
        nx, ny = (span_w - BLOCK) // CELL + 1, (span_h - BLOCK) // CELL + 1
        # partial[k, bx, by]: block (bx, by) scored as the k-th block of a window.
        partial = (self._weights @ values.reshape(nx * ny, BLOCK_VALUES).T).reshape(BLOCKS_X, BLOCKS_Y, nx, ny)
        wx, wy = nx - BLOCKS_X + 1, ny - BLOCKS_Y + 1
        scores = np.full((wx, wy), self._bias, np.float32)
        for i in range(BLOCKS_X):
            for j in range(BLOCKS_Y):
                scores += partial[i, j, i:i + wx, j:j + wy]
        hx, hy = np.nonzero(scores >= 0)
        return np.stack([hx, hy], 1) * CELL - PADDING, scores[hx, hy]

    def _level(self, image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """One level's hits as boxes `(N, 4)` x, y, w, h in `image` pixels, and their scores."""
        import cv2

        height, width = image.shape[:2]
        size = (int(np.rint(width / scale)), int(np.rint(height / scale)))
        level = image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR_EXACT)
        corners, found = self.level_hits(level)
        window = np.rint(np.array(WINDOW) * scale).astype(np.int64)
        return (np.concatenate([np.rint(corners * scale).astype(np.int64), np.broadcast_to(window, corners.shape)], 1),
                found.astype(np.float64))

    def detect(self, image: np.ndarray, step: float, pool: Executor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`pool`: threads to score the levels on (as OpenCV spreads them over its own); the same
        result in the same order either way."""
        height, width = image.shape[:2]
        scales = pyramid_scales(width, height, step)
        if pool is None:
            levels = [self._level(image, scale) for scale in scales]
        else:
            levels = list(pool.map(lambda scale: self._level(image, scale), scales))
        levels = [level for level in levels if len(level[0])]
        if not levels:
            return np.zeros((0, 4), np.int64), np.zeros(0)
        boxes, best = group_rectangles(*(np.concatenate(part) for part in zip(*levels)))
        # OpenCV then clips the boxes to the image and drops any left empty.
        x1, y1 = np.maximum(boxes[:, 0], 0), np.maximum(boxes[:, 1], 0)
        x2, y2 = np.minimum(boxes[:, 0] + boxes[:, 2], width), np.minimum(boxes[:, 1] + boxes[:, 3], height)
        keep = (x2 > x1) & (y2 > y1)
        return np.stack([x1, y1, x2 - x1, y2 - y1], 1)[keep], best[keep]
