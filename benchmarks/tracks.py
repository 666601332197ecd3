"""Tracks and detections of `partsearch ingest` against a ground truth (issue 26).

Two videos:
- the synthetic street (`partsearch.video.synth`), whose ground truth is exact: every figure's
  box in every frame;
- OpenCV's `vtest.avi` (Debian's `opencv-doc`: /usr/share/doc/opencv-doc/examples/data/vtest.avi,
  or `--vtest PATH`) with the hand-checked ground truth in `benchmarks/data/vtest_gt/` (its
  README.md says how it was made and what it leaves out): a box and a person id on every 10th frame.

Tracking: each tracker setting runs `partsearch.video.ingest.ingest` (the code users run: decode,
detect, track, crop) and its records are scored by `partsearch.video.groundtruth.tracking_scores`
(py-motmetrics IDF1, MOTA, ID switches, fragmentations; tracks per person-pass; mixed tracks) on
the labelled frames. Detection: each detector is run on the labelled frames and scored by
`detection_scores` (precision and recall at IoU 0.5), with ingest's filters (score, height).
"""

from __future__ import annotations

import collections
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import base_parser, log, report, set_threads

DATA = Path(__file__).resolve().parent / "data" / "vtest_gt"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def records_as_tracks(records: list[dict]) -> dict:
    tracks = collections.defaultdict(list)
    for r in records:
        tracks[r["frame"]].append((r["track"], tuple(r["box"])))
    return dict(tracks)


class HaarFullBody:
    """OpenCV's Haar cascade for full bodies (`haarcascade_fullbody.xml`, in OpenCV's data files):
    a bundled-weight alternative to HOG, measured here only."""

    name = "haar-fullbody"
    default_min_score = 0.0

    def __init__(self):
        import cv2

        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_fullbody.xml")

    def __call__(self, frame):
        import cv2

        from partsearch.video.detect import PersonBox

        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        found = self._cascade.detectMultiScale(gray, scaleFactor=1.05, minNeighbors=3, minSize=(24, 48))
        return [PersonBox(int(x), int(y), int(x + w), int(y + h), 1.0) for x, y, w, h in found]


class ReplayBoxes:
    """The synthetic street's ground-truth boxes of the n-th sampled frame, each dropped with
    probability `drop` and shifted by up to 3 px: the tracker measured apart from the detector."""

    name = "replay"
    default_min_score = 0.0

    def __init__(self, truth: dict, frames: list[int], drop: float = 0.2, seed: int = 0):
        import numpy as np

        self.truth, self.frames, self.drop, self.calls = truth, frames, drop, 0
        self.rng = np.random.default_rng(seed)

    def __call__(self, image):
        from partsearch.video.detect import PersonBox

        frame = self.frames[self.calls % len(self.frames)]
        self.calls += 1
        boxes = []
        for _, (x1, y1, x2, y2) in self.truth.get(frame, []):
            if self.rng.random() >= self.drop:
                d = self.rng.integers(-3, 4, size=4)
                boxes.append(PersonBox(int(x1 + d[0]), int(y1 + d[1]), int(x2 + d[2]), int(y2 + d[3]), 1.0))
        return boxes


class RecordedBoxes:
    """Another detector's boxes, passed through and kept per call (`boxes[n]`: the n-th sampled
    frame's), so that the same boxes can be replayed with some dropped (`DroppedBoxes`)."""

    def __init__(self, detector):
        self.detector = detector
        self.name, self.default_min_score = detector.name, detector.default_min_score
        self.config = getattr(detector, "config", None)
        self.calls, self.boxes = 0, []

    def __call__(self, image):
        found = self.detector(image)
        if self.calls < len(self.boxes):
            self.boxes[self.calls] = found
        else:
            self.boxes.append(found)
        self.calls += 1
        return found


class DroppedBoxes:
    """Recorded boxes (`RecordedBoxes.boxes`) replayed with each box dropped with probability
    `drop` (seeded): how far the tracker's scores move when the detector misses a few more people,
    as a slightly different detector or setting would."""

    def __init__(self, recorded: RecordedBoxes, drop: float, seed: int):
        import numpy as np

        self.boxes, self.drop, self.calls = recorded.boxes, drop, 0
        self.name, self.default_min_score, self.config = recorded.name, recorded.default_min_score, recorded.config
        self.rng = np.random.default_rng(seed)

    def __call__(self, image):
        found = self.boxes[self.calls]
        self.calls += 1
        keep = self.rng.random(len(found)) >= self.drop
        return [box for box, kept in zip(found, keep) if kept]


def make_detector(spec: str):
    """`hog` (ingest's default), `hog-1x` (HOG at the frame's size, pyramid step 1.05), `haar`, or
    anything `partsearch ingest --detector` takes."""
    from partsearch.video.detect import HogDetector, build_detector

    if spec == "hog-1x":
        return HogDetector(scale=1.05, upscale=1.0)
    if spec == "haar":
        return HaarFullBody()
    return build_detector(spec)


def score_detectors(video: Path, gt: dict, detectors: list[str], min_height: int) -> list[dict]:
    import time

    from partsearch.video.decode import sample_frames
    from partsearch.video.groundtruth import detection_scores

    frames = {f.index: f.image for f in sample_frames(video, None) if f.index in gt}
    rows = []
    for spec in detectors:
        detector = make_detector(spec)
        start = time.perf_counter()
        found = {i: [b for b in detector(image) if b.height >= min_height and b.score >= detector.default_min_score]
                 for i, image in frames.items()}
        seconds = (time.perf_counter() - start) / max(1, len(frames))
        scores = detection_scores(gt, {i: [b.xyxy for b in boxes] for i, boxes in found.items()})
        rows.append({"detector": spec, **{k: scores[k] for k in ("precision", "recall", "true", "false", "missed")},
                     "ms_per_frame": 1000 * seconds})
        log(f"{video.name} {spec}: precision {scores['precision']:.3f} recall {scores['recall']:.3f}")
    return rows


def score_tracking(name: str, video: Path, gt: dict, fps_video: float, settings: dict, work: Path,
                   detector=None) -> list[dict]:
    from partsearch.video.groundtruth import tracking_scores
    from partsearch.video.ingest import ingest, read_records

    rows = []
    for n, (label, setting) in enumerate(settings.items()):
        out = work / f"{name}-{n}"
        if detector is not None:
            detector.calls = 0
        report_ = ingest([video], out, setting, detector=detector, progress=False)
        scores = tracking_scores(gt, records_as_tracks(read_records(out)), fps_video)
        shutil.rmtree(out)
        rows.append({"video": name, "setting": label, **{k: scores[k] for k in (
            "idf1", "mota", "id_switches", "fragmentations", "tracks", "passes", "tracks_per_pass",
            "mixed_tracks", "recall", "precision")}, "seconds": report_.videos[0].seconds})
        log(f"{name} {label}: IDF1 {scores['idf1']:.3f} MOTA {scores['mota']:.3f} tracks {scores['tracks']} "
            f"per pass {scores['tracks_per_pass']:.2f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("tracks", "ingest's tracks and detections against ground truth (synthetic, vtest.avi)")
    parser.add_argument("--vtest", default=str(VTEST), help="OpenCV's vtest.avi")
    parser.add_argument("--gt", default=str(DATA / "gt" / "gt.txt"), help="its MOTChallenge ground truth")
    parser.add_argument("--detectors", nargs="+", default=["hog", "hog-1x", "haar"], help="detectors to score on the labelled frames")
    parser.add_argument("--skip-vtest", action="store_true")
    parser.add_argument("--drop-seeds", type=int, default=5,
                        help="vtest: replay HOG's boxes with a share dropped, this many seeds (0: not)")
    parser.add_argument("--drop", type=float, default=0.05, help="the share of boxes those replays drop")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    import cv2

    from partsearch.video.groundtruth import read_mot
    from partsearch.video.settings import IngestSettings
    from partsearch.video.synth import write_video

    cv2.setNumThreads(args.threads)
    settings = {"stitched, re-identified (default)": IngestSettings(),
                "stitched, not re-identified": IngestSettings(reidentify=False),
                "neither": IngestSettings(stitch=False, reidentify=False)}
    work = Path(tempfile.mkdtemp(prefix="partsearch-tracks-bench-"))
    rows, detection_rows, notes = [], [], []
    try:
        street = write_video(work / "street.avi", num_frames=100, size=(480, 640), people=3, height=240, seed=3)
        sampled = list(range(0, 100, 2))  # the frames ingest's 5 frames/s keeps of 10
        street_gt = {f: [(k + 1, track[f]) for k, track in enumerate(street.tracks) if f in track] for f in sampled}
        street_gt = {f: v for f, v in street_gt.items() if v}
        rows += score_tracking("synthetic", street.path, street_gt, street.fps, settings, work)
        rows += score_tracking("synthetic, true boxes, 20% dropped", street.path, street_gt, street.fps, settings,
                               work, detector=ReplayBoxes(street_gt, sampled))
        notes.append("synthetic: 100 frames of 640x480 at 10 fps, 3 walkers about 240 px tall in their own lanes, "
                     "scored on the 50 sampled frames; with HOG, and with the true boxes (20% dropped, 3 px jitter) "
                     "to measure the tracker alone")
        vtest = Path(args.vtest)
        if args.skip_vtest:
            pass
        elif not vtest.is_file():
            notes.append(f"vtest: {vtest} not found (apt-get install opencv-doc); not measured")
        else:
            gt = read_mot(args.gt)
            hog = RecordedBoxes(make_detector("hog"))
            rows += score_tracking("vtest", vtest, gt, 10.0, settings, work, detector=hog)
            rows += score_tracking("vtest", vtest, gt, 10.0,
                                   {"motion gate, stitched, re-identified": IngestSettings(motion_gate=True)}, work)
            dropped = []
            for seed in range(args.drop_seeds):
                dropped += score_tracking(f"vtest, {args.drop:.0%} of HOG's boxes dropped, seed {seed}", vtest, gt,
                                          10.0, {"stitched, re-identified (default)": IngestSettings()}, work,
                                          detector=DroppedBoxes(hog, args.drop, seed))
            rows += dropped
            if dropped:
                idf1 = [r["idf1"] for r in dropped]
                notes.append(f"vtest with {args.drop:.0%} of HOG's boxes dropped, {len(idf1)} seeds: IDF1 mean "
                             f"{sum(idf1) / len(idf1):.3f}, min {min(idf1):.3f}, max {max(idf1):.3f}")
            detection_rows = score_detectors(vtest, gt, args.detectors, IngestSettings().min_height)
            people = len({i for boxes in gt.values() for i, _ in boxes})
            notes.append(f"vtest: {sum(len(v) for v in gt.values())} boxes of {people} ids on {len(gt)} labelled "
                         f"frames ({args.gt})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes.append("IDF1/MOTA/switches/fragmentations: py-motmetrics at IoU 0.5 on the labelled frames; tracks: "
                 "tracks ingest made; tracks_per_pass: distinct tracks matched per person-pass; mixed_tracks: "
                 "tracks matched to a second person for more than 1 s; HOTA: not in py-motmetrics 1.4")
    if detection_rows:
        notes.append("detection on the labelled vtest frames, IoU 0.5, ingest's filters: "
                     + "; ".join(f"{r['detector']}: precision {r['precision']:.3f} recall {r['recall']:.3f} "
                                 f"({r['true']} found, {r['false']} false, {r['missed']} missed; "
                                 f"{r['ms_per_frame']:.0f} ms/frame)"
                                 for r in detection_rows))
    report("tracks", rows, args, notes, extra={"detection": detection_rows})
    return 0
