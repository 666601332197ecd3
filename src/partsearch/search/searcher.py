"""`partsearch.Searcher(index_dir).search(text, k)`, which `partsearch search` (`commands/search.py`) runs.

A query is embedded once, folded (`fold_query`) and matched against the gallery's folded vectors by
maximum inner product, which is exactly the model's similarity s(v, t) (METHOD.md, Similarity).
Each result also carries the three level scores and the per-part cosines, computed on the stored
part embeddings of the top k only.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from partsearch.errors import QueryError, SearchIndexError, UnknownImage
from partsearch.eval.parts import stripe_regions
from partsearch.model.similarity import global_cosines, token_cosines
from partsearch.search.encoder import Encoder, GalleryArrays
from partsearch.search.segments import Entry, Generation
from partsearch.search.store import IndexStore, check_model
from partsearch.search.tracks import AGGREGATES, DEFAULT_AGGREGATE
from partsearch.search.tracks import aggregate as aggregate_scores
from partsearch.search.vectors import VectorIndex

MAX_TOP_K = 1000
# A track search first asks the vector index for this many crops per wanted track (more when
# they hold too few tracks) [ours].
TRACK_CANDIDATES = 10
# Texts are cut here before tokenizing, far beyond any tokenizer limit, so a huge request body
# costs no tokenizer time [ours].
MAX_QUERY_CHARS = 2000

# Coarse token scores closer than this are shown as one number: tokens that read alike say
# nothing apart [ours].
ALIKE = 0.02


def coarse_display(scores: list[float], tolerance: float = ALIKE) -> list[tuple[str, float]]:
    """(label, cosine) rows for the coarse tokens, as far as they differ: one row with their mean
    when all lie within `tolerance`, else one row per token."""
    if not scores:
        return []
    if max(scores) - min(scores) <= tolerance:
        return [(f"coarse ({len(scores)} tokens alike)", sum(scores) / len(scores))]
    return [(f"token {j + 1}", v) for j, v in enumerate(scores)]


@dataclass
class SearchResult:
    rank: int
    id: int
    score: float  # s(v, t) = w_g global + w_c coarse + w_f fine
    levels: dict[str, float]  # "global", "coarse", "fine": cosine, mean over tokens/parts
    parts: dict[str, list[float]]  # "coarse": N_c cosines, "fine": P cosines (stripe i <-> text token i)
    regions: list[str]  # body region of each fine stripe, head to feet (`eval.parts.stripe_regions`)
    name: str
    relpath: str  # relative to the images root (or to uploads/)
    source: str
    path: str  # absolute path on this machine

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResponse:
    query: str  # as searched, cut at MAX_QUERY_CHARS: a huge request is never echoed back
    truncated: bool  # the query was cut at the tokenizer's limit
    results: list[SearchResult]
    score_max: float = 3.0  # the largest possible score, w_g + w_c + w_f (scores lie in [-max, max])
    match_threshold: float | None = None  # below it a result is a weak match (`threshold.py`)

    def to_dict(self) -> dict:
        return {"query": self.query, "truncated": self.truncated, "score_max": self.score_max,
                "match_threshold": self.match_threshold, "results": [r.to_dict() for r in self.results]}


@dataclass
class TrackCrop:
    """A track's best crop: its image and where it was seen."""

    id: int
    score: float  # s(v, t) of this crop
    name: str
    relpath: str
    path: str  # absolute path on this machine
    frame: int
    time: float  # seconds from the start of the video
    box: list[int]  # [x1, y1, x2, y2] in frame pixels, x2/y2 exclusive


@dataclass
class TrackResult:
    rank: int
    video: str  # the video file, relative to the index's images root; (video, track) is the key
    track: int
    score: float  # the crops' scores aggregated (`TrackResponse.aggregate`)
    crops: int  # crops of this track in the index
    start: float  # time of its first and last crop, seconds
    end: float
    best: TrackCrop

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrackResponse:
    query: str
    truncated: bool
    results: list[TrackResult]
    aggregate: str  # how a track's score is made from its crops' (`tracks.AGGREGATES`)
    score_max: float = 3.0
    match_threshold: float | None = None  # for a crop's score: the best crop's (`TrackCrop.score`)

    def to_dict(self) -> dict:
        return {"query": self.query, "truncated": self.truncated, "aggregate": self.aggregate,
                "score_max": self.score_max, "match_threshold": self.match_threshold,
                "results": [r.to_dict() for r in self.results]}


def validate_query(text: str, k: int) -> str:
    if not isinstance(text, str) or not text.strip():
        raise QueryError("the query is empty; describe the person, e.g. 'a woman in a red coat with a black bag'")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP_K:
        raise QueryError(f"top_k={k!r} is out of range; use an integer from 1 to {MAX_TOP_K}")
    return text.strip()


def part_cosines(gallery: GalleryArrays, rows: np.ndarray, text: GalleryArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-part cosines of gallery `rows` against the first text: global `(K,)`, coarse `(K, N_c)`,
    fine `(K, P)`; row 0 of `model.similarity`'s cosines, computed on the numpy arrays."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, np.float32))

    g = global_cosines(tensor(text.global_[:1]), tensor(gallery.global_[rows]))[0]
    c = token_cosines(tensor(text.coarse[:1]), tensor(gallery.coarse[rows]))[0]
    f = token_cosines(tensor(text.fine[:1]), tensor(gallery.fine[rows]))[0]
    return g.numpy(), c.numpy(), f.numpy()


class Searcher:
    """Search one index directory with the model it was built with.

    `encoder` defaults to the run recorded in the index (`RunEncoder`); `vector_index` defaults to
    each generation's own FAISS index and may be any `vectors.VectorIndex`, e.g. `milvus.MilvusIndex`,
    which is synced to every generation that goes live. The index is re-read when another
    process swaps its CURRENT generation.
    """

    def __init__(self, index_dir: str | Path, encoder: Encoder | None = None, device: str = "auto",
                 vector_index: VectorIndex | None = None):
        self.store = IndexStore(index_dir)
        self._lock = threading.Lock()
        self.generation = self.store.load()
        if encoder is None:
            from partsearch.search.encoder import RunEncoder

            run_dir, checkpoint = self.store.run_source(self.generation.meta)
            if checkpoint is None or not checkpoint.exists():
                recorded = self.generation.meta.get("source", {})
                raise SearchIndexError(
                    f"index {self.store.root} was built from checkpoint "
                    f"{recorded.get('checkpoint_absolute') or recorded.get('checkpoint')!r}, which is not there; "
                    "name the run with --run RUN_DIR if it moved, or index the images again with a run that exists"
                )
            encoder = RunEncoder(run_dir, str(checkpoint), device)
        self.encoder = encoder
        self.vector_index = vector_index
        self.set_generation(self.generation)

    @property
    def root(self) -> Path:
        return self.store.root

    def current(self) -> Generation:
        """The live generation, reloaded if another writer swapped CURRENT since."""
        gen = self.generation
        try:
            name = self.store.current_name()
        except SearchIndexError:
            return gen
        if name != gen.name:
            with self._lock:
                if self.generation.name != name:
                    try:
                        self.set_generation(self.store.load(name))
                    except SearchIndexError:
                        pass  # superseded while loading; the generation in hand stays valid
                gen = self.generation
        return gen

    def set_generation(self, gen: Generation) -> None:
        """Make `gen` live; an external vector index (Milvus) is synced to it first."""
        check_model(gen.meta, self.encoder, self.store.root)
        if self.vector_index is not None:
            self.vector_index.sync(gen)
        self.generation = gen

    def image_path(self, entry: Entry, gen: Generation | None = None) -> Path:
        return self.store.image_path((gen or self.current()).meta, entry)

    def entry(self, image_id: int) -> tuple[Entry, int, Generation]:
        gen = self.current()
        if image_id not in gen.rows:
            raise UnknownImage(image_id, self.store.root)
        row = gen.rows[image_id]
        return gen.entries[row], row, gen

    def encode_query(self, text: str) -> tuple[GalleryArrays, bool]:
        """The query's embeddings and whether it was cut (at MAX_QUERY_CHARS or the tokenizer limit)."""
        emb, truncated = self.encoder.encode_texts([text[:MAX_QUERY_CHARS]])
        return emb, bool(truncated[0]) or len(text) > MAX_QUERY_CHARS

    def query(self, text: str, k: int = 10) -> SearchResponse:
        text = validate_query(text, k)
        gen = self.current()
        emb, truncated = self.encode_query(text)
        folded = self.encoder.fold_query(emb)
        vectors = self.vector_index or gen.vectors
        scores, ids = vectors.search(folded, emb.global_, k)
        keep = ids[0] >= 0
        ids, scores = ids[0][keep], scores[0][keep]
        ids_known = [(int(i), float(s)) for i, s in zip(ids, scores) if int(i) in gen.rows]
        rows = np.array([gen.rows[i] for i, _ in ids_known], dtype=np.int64)
        g, c, f = part_cosines(gen.arrays, rows, emb) if len(rows) else ([], [], [])
        regions = stripe_regions(gen.arrays.fine.shape[1]) if len(rows) else []
        results = []
        for rank, ((image_id, score), row) in enumerate(zip(ids_known, rows), start=1):
            entry = gen.entries[row]
            r = rank - 1
            results.append(SearchResult(
                rank=rank, id=image_id, score=score,
                levels={"global": float(g[r]), "coarse": float(c[r].mean()), "fine": float(f[r].mean())},
                parts={"coarse": [float(x) for x in c[r]], "fine": [float(x) for x in f[r]]},
                regions=list(regions), name=entry.name, relpath=entry.path, source=entry.source,
                path=str(self.store.image_path(gen.meta, entry)),
            ))
        return SearchResponse(text[:MAX_QUERY_CHARS], truncated, results, float(sum(self.encoder.weights)),
                              gen.meta.get("match_threshold"))

    def search(self, text: str, k: int = 10) -> list[SearchResult]:
        """The top `k` images for `text`, best first."""
        return self.query(text, k).results

    def query_tracks(self, text: str, k: int = 10, aggregate: str = DEFAULT_AGGREGATE) -> TrackResponse:
        """The top `k` tracks of the index's video crops for `text`, each scored from all its
        crops' scores by `aggregate` (`tracks.AGGREGATES`). Crops come from the vector index
        until the k-th track outscores every crop not yet seen (a track's score is at most its
        best crop's), so with an exact index the ranking is exact; crops outside any track
        (plain images, uploads) are left out."""
        text = validate_query(text, k)
        if aggregate not in AGGREGATES:
            raise QueryError(f"aggregate={aggregate!r} is unknown; use one of {', '.join(AGGREGATES)}")
        gen = self.current()
        if not gen.tracks:
            raise QueryError(f"index {self.store.root} holds no tracks: index a gallery written by "
                             "`partsearch ingest` to search tracks, or search images")
        emb, truncated = self.encode_query(text)
        folded = self.encoder.fold_query(emb)
        vectors = self.vector_index or gen.vectors
        wanted = min(len(gen.entries), k * TRACK_CANDIDATES)
        while True:
            scores, ids = vectors.search(folded, emb.global_, wanted)
            seen = {gen.entries[gen.rows[int(i)]].video.key for i in ids[0]
                    if int(i) in gen.rows and gen.entries[gen.rows[int(i)]].video is not None}
            ranked = self._rank_tracks(gen, seen, folded, aggregate)
            unseen_bound = float(scores[0][-1]) if len(scores[0]) else float("inf")
            if wanted >= len(gen.entries) or (len(ranked) >= k and ranked[k - 1][0] >= unseen_bound):
                break
            wanted = min(len(gen.entries), wanted * 4)
        results = [self._track_result(gen, rank, key, score, crop_scores)
                   for rank, (score, key, crop_scores) in enumerate(ranked[:k], start=1)]
        return TrackResponse(text[:MAX_QUERY_CHARS], truncated, results, aggregate,
                             float(sum(self.encoder.weights)), gen.meta.get("match_threshold"))

    @staticmethod
    def _rank_tracks(gen: Generation, keys: set, folded: np.ndarray, aggregate: str):
        """[(track score, key, crop scores in the track's row order)], best first (ties by key)."""
        ranked = []
        for key in keys:
            # s(v, t) of every crop of the track: the inner product of folded vectors, as the exact re-rank scores
            exact = np.asarray(gen.folded[gen.tracks[key]], np.float32) @ folded[0]
            ranked.append((aggregate_scores(exact, aggregate), key, exact))
        ranked.sort(key=lambda item: (-item[0], item[1]))
        return ranked

    def _track_result(self, gen: Generation, rank: int, key: tuple[str, int], score: float,
                      crop_scores: np.ndarray) -> TrackResult:
        rows = gen.tracks[key]
        best_row = int(rows[int(np.argmax(crop_scores))])
        entry, first, last = gen.entries[best_row], gen.entries[rows[0]], gen.entries[rows[-1]]
        best = TrackCrop(id=entry.id, score=float(np.max(crop_scores)), name=entry.name, relpath=entry.path,
                         path=str(self.store.image_path(gen.meta, entry)), frame=entry.video.frame,
                         time=entry.video.time, box=list(entry.video.box))
        return TrackResult(rank=rank, video=key[0], track=key[1], score=score, crops=len(rows),
                           start=first.video.time, end=last.video.time, best=best)

    def __len__(self) -> int:
        return len(self.current().entries)


def format_table(response: SearchResponse) -> str:
    lines = []
    if response.truncated:
        lines.append("note: the query was longer than the tokenizer limit and was truncated")
    threshold = response.match_threshold
    if threshold is not None and response.results and response.results[0].score < threshold:
        lines.append(f"note: no result is a good match (the best score is below {threshold:.4f}, the match "
                     "threshold measured on the validation split)")
    lines.append(f"{'rank':>4}  {'score':>7}  {'global':>7}  {'coarse':>7}  {'fine':>7}  path")
    for r in response.results:
        lines.append(f"{r.rank:>4}  {r.score:7.4f}  {r.levels['global']:7.4f}  {r.levels['coarse']:7.4f}  "
                     f"{r.levels['fine']:7.4f}  {r.path}")
        lines.append("      parts: " + "  ".join(f"{name} {x:+.3f}" for name, x in zip(r.regions, r.parts["fine"])))
        lines.append("      coarse: " + "  ".join(f"{k} {v:+.3f}" for k, v in coarse_display(r.parts["coarse"])))
    return "\n".join(lines)


def format_track_table(response: TrackResponse) -> str:
    lines = []
    if response.truncated:
        lines.append("note: the query was longer than the tokenizer limit and was truncated")
    threshold = response.match_threshold
    if threshold is not None and response.results and response.results[0].best.score < threshold:
        lines.append(f"note: no track is a good match (its best crop scores below {threshold:.4f}, the match "
                     "threshold measured on the validation split)")
    lines.append(f"{'rank':>4}  {'score':>7}  {'track':>5}  {'crops':>5}  {'seen (s)':>15}  video  "
                 f"(track score: {response.aggregate} of its crops' scores)")
    for r in response.results:
        b = r.best
        lines.append(f"{r.rank:>4}  {r.score:7.4f}  {r.track:>5}  {r.crops:>5}  {r.start:7.2f}-{r.end:<7.2f}  {r.video}")
        lines.append(f"      best crop {b.score:.4f} at {b.time:.2f} s (frame {b.frame}, box {b.box}): {b.path}")
    return "\n".join(lines)


def open_searcher(index_dir: str | Path, run_dir: str | None = None, checkpoint: str = "best") -> Searcher:
    """A Searcher over `index_dir` with the model of `run_dir` when given (the index checks it is
    the model it was built with), otherwise the run the index records."""
    encoder = None
    if run_dir:
        from partsearch.search.encoder import RunEncoder

        encoder = RunEncoder(run_dir, checkpoint)
    return Searcher(index_dir, encoder=encoder)
