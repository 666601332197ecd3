"""The rows of an index generation in memory: a manifest line (`Entry`), the immutable segments
of a generation (`Segment`), the generation they make less its deleted rows (`Generation`,
`assemble`), the vector search over its segments (`SegmentVectors`) and the no-copy row view over
several segments' memory maps (`RowStack`). `store.IndexStore` reads and writes them on disk.

A segment stores each image's folded vector once, float16 [ours: chosen over int8 with a
per-vector scale, docs/SEARCH.md gives the measured score error]; its global, coarse and fine
vectors are views of that array (`level_views`), and `RowStack` reads the live rows of all segments
as one array without copying them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from partsearch.search.encoder import GalleryArrays
from partsearch.search.tracks import VideoRecord, group_tracks
from partsearch.search.vectors import FaissIndex

SOURCES = ("images", "uploads")
STORED_DTYPE = np.float16
_ENTRY_FIELDS = {"id": int, "source": str, "path": str, "sha256": str, "size": int}


@dataclass(frozen=True)
class Entry:
    """One manifest line. `video` is where a crop of a `partsearch ingest` gallery was seen (its
    track among them); None for plain images and uploads, and absent from their lines."""

    id: int
    source: str
    path: str
    sha256: str
    size: int
    video: VideoRecord | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_json(self) -> str:
        values = {"id": self.id, "source": self.source, "path": self.path, "sha256": self.sha256, "size": self.size}
        if self.video is not None:
            values["video"] = self.video.to_dict()
        return json.dumps(values)


def level_views(folded: np.ndarray, dim: int, num_coarse: int, num_fine: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The global `(n, d)`, coarse `(n, N_c, d)` and fine `(n, P, d)` vectors of folded `(n, D)`
    rows (`model.similarity.fold_gallery` concatenates them in this order), as views: no copy."""
    n, split = len(folded), dim * (1 + num_coarse)
    return (folded[:, :dim], folded[:, dim:split].reshape(n, num_coarse, dim),
            folded[:, split:].reshape(n, num_fine, dim))


class RowStack:
    """The live rows of several arrays read as one `(N, ...)` array, without copying them: the
    rows `rows[s]` of `parts[s]` follow those of `parts[s - 1]`. Indexing with an integer, a
    slice, an integer or boolean array (optionally followed by more indices) returns a numpy
    array; `np.asarray` gathers every row (avoid it on a large gallery)."""

    def __init__(self, parts: Sequence[np.ndarray], rows: Sequence[np.ndarray]):
        self.parts, self.rows = list(parts), [np.asarray(r, np.int64) for r in rows]
        self.offsets = np.cumsum([0] + [len(r) for r in self.rows])
        self.shape = (int(self.offsets[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype
        whole = len(self.parts) == 1 and len(self.rows[0]) == len(self.parts[0])
        self._whole = self.parts[0] if whole else None  # one segment, nothing deleted: index it directly

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if self._whole is not None:
            return self._whole[(key, *rest)]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} is out of range for {len(self)} rows")
            s = int(np.searchsorted(self.offsets, i, side="right")) - 1
            return self.parts[s][(self.rows[s][i - self.offsets[s]], *rest)]
        index = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = index.astype(np.int64).reshape(-1)
        index = np.where(index < 0, index + len(self), index)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} rows")
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        seg = np.searchsorted(self.offsets, index, side="right") - 1
        for s in np.unique(seg):
            mask = seg == s
            out[mask] = self.parts[s][self.rows[s][index[mask] - self.offsets[s]]]
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype, copy=False)


@dataclass
class Segment:
    """One immutable segment, loaded: its manifest rows, folded vectors `(n, D)` and foreground maps
    `(n, h, w)` (float16, memory-mapped) and the FAISS index over its rows."""

    name: str
    entries: list[Entry]
    folded: np.ndarray
    foreground: np.ndarray
    vectors: FaissIndex
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self):
        self.ids = np.array([e.id for e in self.entries], np.int64)

    def __len__(self) -> int:
        return len(self.entries)


class SegmentVectors:
    """A `vectors.VectorIndex` over the segments of a generation: each segment's FAISS index is
    searched for k plus its deleted rows, deleted ids are dropped and the lists merged by score.
    Each segment's scores are exact on its folded vectors (Flat, or the exact re-rank), so the
    merged top k is the top k of the generation."""

    def __init__(self, parts: Sequence[tuple[FaissIndex, np.ndarray]]):
        self.parts = list(parts)

    def __len__(self) -> int:
        return sum(len(index) - len(deleted) for index, deleted in self.parts)

    def search(self, query_folded: np.ndarray, query_global: np.ndarray | None, k: int,
               rows: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """With `rows` (one sorted array of live segment rows per segment, `Generation.segment_rows`)
        only those rows are searched: a filter applied inside each segment's index."""
        k = min(k, len(self) if rows is None else sum(len(r) for r in rows))
        scores = [np.zeros((len(query_folded), 0), np.float32)]
        ids = [np.zeros((len(query_folded), 0), np.int64)]
        for j, (index, deleted) in enumerate(self.parts if k else []):
            if rows is not None:
                if len(rows[j]):
                    s, i = index.search(query_folded, query_global, k, rows=rows[j])
                    scores.append(s)
                    ids.append(i)
                continue
            s, i = index.search(query_folded, query_global, k + len(deleted))
            if len(deleted):
                gone = np.isin(i, deleted)
                s, i = np.where(gone, -np.inf, s).astype(np.float32), np.where(gone, -1, i)
            scores.append(s)
            ids.append(i)
        scores, ids = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def sync(self, generation: Generation) -> None:
        """Nothing to do: every segment's FAISS index is built with it and never changes."""


@dataclass
class Generation:
    """One generation of an index, loaded: the catalogue's segments less their deleted rows.
    `entries`, `folded` `(G, D)` and `arrays` (global, coarse, fine: views of `folded`;
    foreground) are in the same row order; `folded` and `arrays` are `RowStack`s of the
    segments' float16 memory maps."""

    name: str
    meta: dict
    entries: list[Entry]
    arrays: GalleryArrays
    folded: RowStack
    vectors: SegmentVectors
    segments: list[Segment] = field(default_factory=list)
    deleted: dict[str, list[int]] = field(default_factory=dict)  # segment name -> its deleted ids
    rows: dict[int, int] = field(default_factory=dict)
    tracks: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # (video, track) -> rows

    def __post_init__(self):
        self.rows = {e.id: i for i, e in enumerate(self.entries)}
        self.tracks = group_tracks([e.video for e in self.entries])

    @property
    def ids(self) -> np.ndarray:
        return np.array([e.id for e in self.entries], np.int64)

    def segment_rows(self, mask: np.ndarray) -> list[np.ndarray]:
        """The generation rows where `mask` `(G,)` is true, as each segment's own row numbers."""
        offsets = self.folded.offsets
        return [live[mask[offsets[s]:offsets[s + 1]]] for s, live in enumerate(self.folded.rows[:len(self.segments)])]

    def reuse_by_sha(self) -> dict[str, int]:
        return {e.sha256: i for i, e in enumerate(self.entries)}

    def catalogue_segments(self) -> list[dict]:
        """The catalogue's segment list of this generation (to extend in a new one)."""
        return [{"name": s.name, "rows": len(s), "deleted": list(self.deleted.get(s.name, []))} for s in self.segments]


def assemble(name: str, meta: dict, segments: list[Segment], deleted: dict[str, list[int]]) -> Generation:
    """A `Generation` over `segments`, less the ids `deleted[segment name]`."""
    live = [np.flatnonzero(~np.isin(s.ids, deleted.get(s.name, []))) for s in segments]
    entries = [s.entries[r] for s, rows in zip(segments, live) for r in rows]
    dim, n_c, p = meta["dim"], meta["num_coarse"], meta["num_fine"]
    if not segments:  # every image deleted: empty arrays of the right widths
        empty = np.zeros((0, dim * (1 + n_c + p)), STORED_DTYPE)
        segments_folded, foregrounds, live = [empty], [np.zeros((0, 1, 1), STORED_DTYPE)], [np.zeros(0, np.int64)]
    else:
        segments_folded, foregrounds = [s.folded for s in segments], [s.foreground for s in segments]
    views = [level_views(f, dim, n_c, p) for f in segments_folded]
    arrays = GalleryArrays(*(RowStack([v[level] for v in views], live) for level in range(3)),
                           RowStack(foregrounds, live))
    vectors = SegmentVectors([(s.vectors, np.asarray(deleted.get(s.name, []), np.int64)) for s in segments])
    return Generation(name, meta, entries, arrays, RowStack(segments_folded, live), vectors, list(segments),
                      {k: list(v) for k, v in deleted.items() if v})


def parse_entry(line: str, path: Path, number: int) -> Entry:
    """One manifest line, checked: fields and types, a known source, and a relative path that stays
    inside its folder (a hand-edited '../' path would serve files the index does not own)."""
    where = f"{path} line {number}"
    values = json.loads(line)
    if not isinstance(values, dict) or set(values) - {"video"} != set(_ENTRY_FIELDS):
        keys = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise ValueError(f"{where}: has {keys}, expected the fields {sorted(_ENTRY_FIELDS)} (and 'video' for a video crop)")
    for key, kind in _ENTRY_FIELDS.items():
        if not isinstance(values[key], kind) or isinstance(values[key], bool):
            raise ValueError(f"{where}: field {key!r} is {values[key]!r}, not a {kind.__name__}")
    rel = Path(values["path"])
    if values["source"] not in SOURCES or rel.is_absolute() or ".." in rel.parts or not values["path"]:
        raise ValueError(f"{where}: source {values['source']!r} / path {values['path']!r} is not an indexed file")
    if "video" in values:
        values["video"] = VideoRecord.from_dict(values["video"], where)
    return Entry(**values)
