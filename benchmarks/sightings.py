"""A person's sightings across cameras: precision and recall of "same person" links on synthetic
multi-camera video, which knows every identity.

Data [ours]: three videos of `partsearch.video.synth.write_video` (the walkers are
`data.synth.make_identities(max(people, 6), seed)[:people]`, so two videos of the same seed share
their first identities): camera A (seed 0, 3 people), camera B (seed 0, 4 people: A's three and
one more), camera C (seed 1, 3 other people). They are ingested with `partsearch.video.ingest`
(HOG, tracking), indexed with a trained run, and every ingest track is given the identity of the
ground-truth figure its boxes overlap most (IoU, majority over its crops).

Each track is a source once: `sightings.find_sightings` returns every other track (k = all) with
its score; a link (source, track) is predicted when the score is at least tau. A link is right
when both tracks show the same identity. Precision and recall are over the ordered pairs of
different tracks, per tau (the scores' quantiles), with the best F1 marked.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import base_parser, log, report

CAMERAS = (("A", 0, 3), ("B", 0, 4), ("C", 1, 3))  # name, seed, people


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("sightings", "precision / recall of same-person links on synthetic multi-camera video")
    parser.add_argument("--run", required=True, help="a trained run directory")
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    from partsearch.search.encoder import RunEncoder
    from partsearch.search.index import build_index
    from partsearch.search.searcher import Searcher
    from partsearch.search.sightings import find_sightings
    from partsearch.video.ingest import ingest, read_records
    from partsearch.video.synth import write_video

    work = Path(args.workdir or tempfile.mkdtemp(prefix="partsearch-sightings-"))
    truth = {}
    for name, seed, people in CAMERAS:
        video = write_video(work / "videos" / f"cam{name}.avi", num_frames=args.frames, people=people, seed=seed)
        truth[f"cam{name}.avi"] = (seed, video.tracks)
    ingest(sorted((work / "videos").glob("*.avi")), work / "gallery", progress=False)
    records = read_records(work / "gallery")
    votes: dict[tuple, dict] = {}
    for r in records:
        seed, tracks = truth[Path(r["video"]).name]
        overlaps = [(iou(r["box"], t[r["frame"]]), k) for k, t in enumerate(tracks) if r["frame"] in t]
        best = max(overlaps, default=(0.0, None))
        if best[0] >= 0.3:
            key = (Path(r["video"]).name, r["track"])
            votes.setdefault(key, {}).setdefault((seed, best[1]), 0)
            votes[key][(seed, best[1])] += 1
    identity = {key: max(v, key=v.get) for key, v in votes.items()}
    log(f"{len(records)} crops in {len(identity)} tracks with a ground-truth identity "
        f"({len(set(identity.values()))} identities)")
    encoder = RunEncoder(args.run, "best", device="cpu")
    build_index(encoder, work / "gallery", work / "index", progress=False, video_records=records,
                video_roots=[work / "videos"])
    searcher = Searcher(work / "index", encoder=encoder)
    gen = searcher.current()
    pairs = []  # (score, same identity)
    for key, rows in gen.tracks.items():
        source = (Path(key[0]).name, key[1])
        if source not in identity:
            continue
        response = find_sightings(searcher, gen.entries[rows[0]].id, k=len(gen.tracks))
        for found in response.results:
            other = (Path(found.sighting.video).name, found.sighting.track)
            if found.role == "found" and other in identity:
                pairs.append((found.sighting.score, identity[source] == identity[other]))
    if not pairs:
        raise SystemExit("sightings: no pair of tracks with a ground-truth identity was linked; "
                         "nothing to measure (try more --frames)")
    scores = np.array([s for s, _ in pairs])
    same = np.array([t for _, t in pairs])
    positives = int(same.sum())
    rows = []
    for tau in np.quantile(scores, np.linspace(0.5, 0.98, 13)):
        linked = scores >= tau
        hits = int((linked & same).sum())
        precision = hits / max(1, int(linked.sum()))
        recall = hits / max(1, positives)
        f1 = 2 * precision * recall / max(1e-9, precision + recall)
        rows.append({"tau": float(tau), "links": int(linked.sum()), "precision": precision, "recall": recall, "f1": f1})
    best = max(rows, key=lambda r: r["f1"])
    for r in rows:
        r["best"] = "<-" if r is best else ""
    report("sightings", rows, args, [
        f"{len(identity)} tracks, {len(pairs)} ordered pairs scored, {positives} of them the same identity; "
        f"run {args.run}; cameras {CAMERAS}, {args.frames} frames each"],
        columns=["tau", "links", "precision", "recall", "f1", "best"])
    return 0
