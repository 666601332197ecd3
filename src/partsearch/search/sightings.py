"""A person's sightings: from one crop (or its track), the tracks of every video and camera that
show the same person by appearance, as a timeline per camera.

The query is the person's appearance [ours, after Rocchio's relevance feedback]: the mean of the
level embeddings (global, coarse, fine) of every crop of the source track and of every sighting a
case confirmed, less GAMMA times the mean of those it rejected, folded like a text query, so a
track scores s(v, q) on the same levels as an image query (`Searcher.query_arrays`). Each track's
score is its crops' scores aggregated by mean-top3 (`tracks.aggregate`), as in a track search.

Plausibility rules [ours]: a track of the same video that overlaps a known sighting in time (one
of its visits, `tracks.visits`) is another person (one person is in one place at a time) and is
left out; with `max_gap` seconds, a
track further than that in time from every known sighting, where the two times can be compared
(wall-clock time when both cameras know it, else video time within one video), is left out.
Rejected tracks are never returned; the source and confirmed ones are, marked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from partsearch.errors import QueryError
from partsearch.search.cases import Case, CaseStore, Sighting
from partsearch.search.encoder import GalleryArrays
from partsearch.search.searcher import MAX_TOP_K, TRACK_CANDIDATES, Searcher
from partsearch.search.segments import Generation
from partsearch.search.tracks import DEFAULT_AGGREGATE, aggregate, frame_with_box, track_visits, wall_seconds

GAMMA = 0.25  # weight of the rejected sightings' mean [ours]


@dataclass
class Found:
    """One track (or plain image) in a person's sightings."""

    rank: int
    sighting: Sighting
    crops: int
    role: str  # "source", "confirmed" or "found"

    def to_dict(self) -> dict:
        return dict(asdict(self.sighting), rank=self.rank, crops=self.crops, role=self.role)


@dataclass
class SightingsResponse:
    source: Sighting
    results: list[Found]
    aggregate: str = DEFAULT_AGGREGATE
    case: str | None = None
    timeline: dict[str, list[int]] = field(default_factory=dict)  # camera -> ranks, in time order

    def to_dict(self) -> dict:
        return {"source": asdict(self.source), "aggregate": self.aggregate, "case": self.case,
                "timeline": self.timeline, "results": [r.to_dict() for r in self.results]}


def rows_of(gen: Generation, key: tuple) -> np.ndarray:
    if key[0] == "image":
        return np.array([gen.rows[key[1]]] if key[1] in gen.rows else [], np.int64)
    return gen.tracks.get(key, np.zeros(0, np.int64))


def sighting_of(gen: Generation, key: tuple, rows: np.ndarray, scores: np.ndarray | None, query: str,
                best: int | None = None) -> Sighting:
    """The sighting of track `key` (or a plain image) at its row `best`, else its best crop by
    `scores`, else its first."""
    if best is None:
        best = int(rows[int(np.argmax(scores))]) if scores is not None else int(rows[0])
    entry = gen.entries[best]
    score = aggregate(scores, DEFAULT_AGGREGATE) if scores is not None else None
    if entry.video is None:
        return Sighting(id=entry.id, score=score, query=query, relpath=entry.path)
    v, first, last = entry.video, gen.entries[rows[0]].video, gen.entries[rows[-1]].video
    return Sighting(id=entry.id, video=v.video, camera=v.camera, track=v.track, frame=v.frame, time=v.time,
                    wall_time=v.wall_time, box=list(v.box), start=first.time, end=last.time, score=score,
                    query=query, relpath=entry.path)


def _interval(gen: Generation, rows: np.ndarray) -> tuple[str | None, list[tuple[float, float]],
                                                        list[tuple[float, float]] | None]:
    """(video, the track's visits in the video's seconds, the same in wall-clock seconds or None)
    of a track's rows (`tracks.visits`: a person who left the view and came back is not there in
    between)."""
    first = gen.entries[int(rows[0])].video
    if first is None:
        return None, [(0.0, 0.0)], None
    spans = track_visits(gen.entries, rows)
    wall = wall_seconds(first.wall_time)
    offset = None if wall is None else wall - first.time  # the wall clock runs with the video
    return first.video, spans, None if offset is None else [(a + offset, b + offset) for a, b in spans]


def _gap(a, b) -> float | None:
    """Seconds between two tracks' nearest visits (0 when two overlap); None when their clocks
    differ."""
    if a[2] is not None and b[2] is not None:
        spans_a, spans_b = a[2], b[2]
    elif a[0] is not None and a[0] == b[0]:
        spans_a, spans_b = a[1], b[1]
    else:
        return None
    return min(max(0.0, max(start_a, start_b) - min(end_a, end_b))
               for start_a, end_a in spans_a for start_b, end_b in spans_b)


def appearance(gen: Generation, positive: list[np.ndarray], negative: list[np.ndarray]) -> GalleryArrays:
    """The person's level embeddings (module docstring), one row."""
    def mean(rows: np.ndarray) -> list[np.ndarray]:
        a = gen.arrays
        return [np.asarray(x[rows], np.float32).mean(axis=0, keepdims=True) for x in (a.global_, a.coarse, a.fine)]

    levels = mean(np.concatenate(positive))
    if negative:
        levels = [p - GAMMA * n for p, n in zip(levels, mean(np.concatenate(negative)))]
    return GalleryArrays(*levels, np.zeros((1, 1, 1), np.float32))


def find_sightings(searcher: Searcher, image_id: int, k: int = 20, case: Case | None = None,
                   max_gap: float | None = None, query: str = "") -> SightingsResponse:
    """The top `k` tracks showing the person of image `image_id` (its track when it has one),
    re-ranked with `case`'s decisions; `query` is recorded as what found them."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP_K:
        raise QueryError(f"top_k={k!r} is out of range; use an integer from 1 to {MAX_TOP_K}")
    if max_gap is not None and not max_gap >= 0:
        raise QueryError(f"max_gap={max_gap!r}: use a number of seconds, 0 or more")
    entry, row, gen = searcher.entry(image_id)
    source_key = entry.video.key if entry.video is not None else ("image", entry.id)
    confirmed = [key for key in (case.keys("confirmed") if case else []) if key != source_key]
    rejected = set(case.keys("rejected") if case else []) - {source_key}
    known = {key: rows_of(gen, key) for key in [source_key, *confirmed]}
    known = {key: rows for key, rows in known.items() if len(rows)}
    negatives = [rows_of(gen, key) for key in rejected]
    q = searcher.encoder.fold_query(appearance(gen, list(known.values()), [r for r in negatives if len(r)]))
    spans = [_interval(gen, rows) for rows in known.values()]

    def plausible(key, rows) -> bool:
        if key in known or key in rejected:
            return key in known
        span = _interval(gen, rows)
        gaps = [_gap(span, other) for other in spans]
        if any(g == 0.0 and span[0] is not None and span[0] == other[0] for g, other in zip(gaps, spans)):
            return False  # the same video at the same time: another person
        comparable = [g for g in gaps if g is not None]
        return max_gap is None or not comparable or min(comparable) <= max_gap

    wanted = min(len(gen.entries), (k + len(known)) * TRACK_CANDIDATES)
    while True:
        scores, ids = (searcher.vector_index or gen.vectors).search(q, None, wanted)
        keys = {gen.entries[gen.rows[int(i)]].video.key if gen.entries[gen.rows[int(i)]].video is not None
                else ("image", int(i)) for i in ids[0] if int(i) in gen.rows}
        ranked = []
        for key in keys | set(known):
            rows = rows_of(gen, key)
            if len(rows) and plausible(key, rows):
                crop_scores = np.asarray(gen.folded[rows], np.float32) @ q[0]
                ranked.append((aggregate(crop_scores, DEFAULT_AGGREGATE), key, rows, crop_scores))
        ranked.sort(key=lambda item: (-item[0], str(item[1])))
        bound = float(scores[0][-1]) if len(scores[0]) else float("inf")
        if wanted >= len(gen.entries) or (len(ranked) >= k + len(known) and ranked[k + len(known) - 1][0] >= bound):
            break
        wanted = min(len(gen.entries), wanted * 4)
    results = []
    for score, key, rows, crop_scores in ranked:
        role = "source" if key == source_key else "confirmed" if key in known else "found"
        if role == "found" and sum(r.role == "found" for r in results) >= k:
            continue
        sighting = sighting_of(gen, key, rows, crop_scores, query)
        held = case.find(key) if case else None
        sighting.decision = held.decision if held else None
        results.append(Found(len(results) + 1, sighting, len(rows), role))
    source = next(r.sighting for r in results if r.role == "source")
    timeline: dict[str, list[int]] = {}
    for r in sorted(results, key=lambda r: (r.sighting.wall_time or "", r.sighting.time or 0.0)):
        timeline.setdefault(r.sighting.camera or "images", []).append(r.rank)
    return SightingsResponse(source, results, DEFAULT_AGGREGATE, case.name if case else None, timeline)


def add_sighting(searcher: Searcher, name: str, image_id: int, decision: str | None = None, query: str = "",
                 score: float | None = None, note: str = "") -> Case:
    """Add the track of image `image_id` (the image itself when it has none) to case `name`, with
    its decision, or set the decision of a sighting the case holds. The case keeps its own copy
    of the crop and of the frame with the box (`cases.CaseStore.keep_copy`)."""
    entry, row, gen = searcher.entry(image_id)
    key = entry.video.key if entry.video is not None else ("image", entry.id)
    sighting = sighting_of(gen, key, rows_of(gen, key), None, query, best=row)
    sighting.score, sighting.decision, sighting.note = score, decision, note
    frame = None
    if entry.video is not None:
        try:
            frame = frame_with_box(searcher.store.images_root(gen.meta) / entry.video.video, entry.video)
        except FileNotFoundError:
            frame = None
    return CaseStore(searcher.store).update(name, sighting, crop=searcher.image_path(entry, gen), frame_jpeg=frame)
