"""Tracks and detections measured against a ground truth (for `python -m benchmarks tracks`).

The ground truth is in the MOTChallenge text format (Milan et al., "MOT16", arXiv 1603.00831):
one line per box, `frame,id,left,top,width,height,conf,x,y,z`, frames counted from 1. Here frame
`n` of the file is the video's frame index `n - 1`; a ground truth may label only some frames
(every 10th, say), and only those frames are scored.

Tracking metrics come from py-motmetrics (cheind/py-motmetrics, MIT): IDF1 (Ristani et al., ECCV
2016 workshops), MOTA, ID switches and fragmentations (Bernardin & Stiefelhagen 2008), matched at
IoU >= 0.5. On top of them [ours], what a person searching footage feels:

- tracks per person-pass: a pass is a person's stay in view, their labelled frames with no gap
  longer than `PASS_GAP_S`; per pass, the number of different tracks matched to it; the mean over
  passes (1.0: every pass is one track);
- mixed tracks: tracks matched to a second person for more than `MIXED_S` seconds (counted on the
  labelled frames, each standing for the time to the next labelled frame).

Detection precision and recall match boxes one-to-one per frame at IoU >= 0.5 (Hungarian, as
the PASCAL VOC and MOT evaluations do).
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from partsearch.errors import DataError

IOU = 0.5
PASS_GAP_S = 3.0
MIXED_S = 1.0

Box = tuple[float, float, float, float]
Frames = dict[int, list[tuple[int, Box]]]  # video frame index -> [(id, (x1, y1, x2, y2))]


def read_mot(path: str | Path) -> Frames:
    """A MOTChallenge file -> {video frame index (from 0): [(id, box)]}."""
    path = Path(path)
    frames: Frames = collections.defaultdict(list)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DataError(f"{path}: cannot read this ground truth ({err.strerror})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            frame, ident, left, top, width, height = (float(v) for v in line.split(",")[:6])
        except ValueError:
            raise DataError(f"{path}:{n}: not a MOTChallenge line (frame,id,left,top,width,height,...): "
                            f"{line!r}") from None
        if frame < 1 or width <= 0 or height <= 0:
            raise DataError(f"{path}:{n}: frames count from 1 and boxes need a positive size: {line!r}")
        frames[int(frame) - 1].append((int(ident), (left, top, left + width, top + height)))
    return dict(frames)


def write_mot(path: str | Path, frames: Frames) -> None:
    """{video frame index: [(id, box)]} -> a MOTChallenge file (frames from 1, conf 1, no 3-D)."""
    lines = [f"{frame + 1},{ident},{x1:g},{y1:g},{x2 - x1:g},{y2 - y1:g},1,-1,-1,-1"
             for frame in sorted(frames) for ident, (x1, y1, x2, y2) in sorted(frames[frame])]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _iou_distances(gt: list[Box], pred: list[Box]) -> np.ndarray:
    """`(G, P)` 1 - IoU, NaN where IoU < 0.5 (py-motmetrics' convention for "cannot match"; its own
    `iou_matrix` calls `np.asfarray`, gone in NumPy 2)."""
    a = np.asarray(gt, dtype=float).reshape(-1, 4)[:, None, :]
    b = np.asarray(pred, dtype=float).reshape(-1, 4)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    dist = 1 - inter / np.maximum(union, 1e-9)
    return np.where(dist <= 1 - IOU, dist, np.nan)


def detection_scores(gt: Frames, boxes: dict[int, list[Box]]) -> dict:
    """Precision and recall at IoU >= 0.5 of `boxes` (frame -> boxes) on the frames `gt` labels."""
    from scipy.optimize import linear_sum_assignment

    matched = false = missed = 0
    for frame, truth in gt.items():
        found = boxes.get(frame, [])
        dist = np.nan_to_num(_iou_distances([b for _, b in truth], found), nan=2.0)
        rows, cols = linear_sum_assignment(dist) if dist.size else ([], [])
        hits = sum(1 for r, c in zip(rows, cols) if dist[r, c] <= 1 - IOU)
        matched, missed, false = matched + hits, missed + len(truth) - hits, false + len(found) - hits
    return {"precision": matched / max(1, matched + false), "recall": matched / max(1, matched + missed),
            "true": matched, "false": false, "missed": missed}


def tracking_scores(gt: Frames, tracks: Frames, fps: float) -> dict:
    """py-motmetrics' IDF1, MOTA, ID switches and fragmentations of `tracks` (frame -> [(track,
    box)]) on the frames `gt` labels, with tracks per person-pass and mixed tracks; `fps` is the
    video's frame rate (frame indices -> seconds)."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    labelled = sorted(gt)
    for frame in labelled:
        truth, found = gt[frame], tracks.get(frame, [])
        acc.update([i for i, _ in truth], [i for i, _ in found],
                   _iou_distances([b for _, b in truth], [b for _, b in found]), frameid=frame)
    summary = mm.metrics.create().compute(
        acc, metrics=["idf1", "mota", "num_switches", "num_fragmentations", "recall", "precision",
                      "num_unique_objects"], name="all")
    row = summary.loc["all"]
    events = acc.mot_events.reset_index()
    matches = events[events["Type"].isin(["MATCH", "SWITCH"])]
    pairs = [(int(f), int(o), int(h)) for f, o, h in zip(matches["FrameId"], matches["OId"], matches["HId"])]
    step = {f: (n - f) / fps for f, n in zip(labelled, labelled[1:] + [labelled[-1] + round(fps)])}

    passes = _passes(gt, fps)
    per_pass = collections.defaultdict(set)
    per_track = collections.defaultdict(collections.Counter)
    for frame, person, track in pairs:
        per_pass[passes[(person, frame)]].add(track)
        per_track[track][person] += step[frame]
    mixed = [t for t, people in per_track.items() if sum(people.values()) - max(people.values()) > MIXED_S]
    all_passes = set(passes.values())
    return {
        "idf1": float(row["idf1"]), "mota": float(row["mota"]), "id_switches": int(row["num_switches"]),
        "fragmentations": int(row["num_fragmentations"]), "recall": float(row["recall"]),
        "precision": float(row["precision"]), "people": int(row["num_unique_objects"]),
        "passes": len(all_passes),
        "tracks_per_pass": sum(len(per_pass[p]) for p in all_passes) / max(1, len(all_passes)),
        "tracks": len({i for boxes in tracks.values() for i, _ in boxes}),
        "matched_tracks": len(per_track), "mixed_tracks": len(mixed),
    }


def _passes(gt: Frames, fps: float) -> dict[tuple[int, int], tuple[int, int]]:
    """(person, frame) -> (person, pass number): a new pass after more than `PASS_GAP_S` unseen."""
    seen = collections.defaultdict(list)
    for frame in sorted(gt):
        for person, _ in gt[frame]:
            seen[person].append(frame)
    out = {}
    for person, frames in seen.items():
        number = 0
        for before, frame in zip([frames[0]] + frames[:-1], frames):
            if (frame - before) / fps > PASS_GAP_S:
                number += 1
            out[(person, frame)] = (person, number)
    return out
