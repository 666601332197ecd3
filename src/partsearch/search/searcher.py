"""`partsearch.Searcher(index_dir).search(text, k)`, which `partsearch search` (`commands/search.py`) runs.

A query is embedded once, folded (`fold_query`) and matched against the gallery's folded vectors by
maximum inner product, which is exactly the model's similarity s(v, t) (METHOD.md, Similarity).
Each result also carries the three level scores and the per-part cosines, computed on the stored
part embeddings of the top k only.

A query may be a text, an image (an uploaded photo, or an indexed image by id: "more like this")
or both. An image query is the image's own embeddings in place of the text's: the same levels,
the same folded inner product, so s(v, i) = w_g cos(g_v, g_i) + w_c mean_j cos(C_v^j, C_i^j) +
w_f mean_i cos(f_v^i, f_i^i), with the same part explanations. Text and image together score
`text_weight * s(v, t) + (1 - text_weight) * s(v, i)` [ours; TEXT_WEIGHT, measured in
docs/SEARCH.md]: the level embeddings are mixed with those weights before folding, and since the
similarity is linear in the query's embeddings this is one inner product, searched like a text.
Filters (`filters.Filters`) narrow the rows the vector index searches.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import torch

from partsearch.errors import QueryError, SearchIndexError, UnknownImage, UnsafeFile
from partsearch.files import regular_file_within
from partsearch.model.fine import stripe_regions
from partsearch.search.filters import Filters
from partsearch.search.querywords import merge, parse_words
from partsearch.search.results import SearchResponse, SearchResult, TrackCrop, TrackResponse, TrackResult
from partsearch.model.similarity import global_cosines, token_cosines
from partsearch.search import threshold as match_threshold
from partsearch.search.encoder import Encoder, GalleryArrays
from partsearch.search.segments import Entry, Generation
from partsearch.search.store import IndexStore, check_model
from partsearch.search.tracks import AGGREGATES, DEFAULT_AGGREGATE, track_visits
from partsearch.search.tracks import aggregate as aggregate_scores
from partsearch.search.vectors import VectorIndex, exact_search

MAX_TOP_K = 1000
# A track search first asks the vector index for this many crops per wanted track (more when
# they hold too few tracks) [ours].
TRACK_CANDIDATES = 10
# Texts are cut here before tokenizing, far beyond any tokenizer limit, so a huge request body
# costs no tokenizer time [ours].
MAX_QUERY_CHARS = 2000

# A text + image query's weight of the text score [ours]: of 0.25 / 0.5 / 0.75 it kept R@1 closest
# to the image alone (`python -m benchmarks image-query`, docs/SEARCH.md).
TEXT_WEIGHT = 0.25


def validate_top_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP_K:
        raise QueryError(f"top_k={k!r} is out of range; use an integer from 1 to {MAX_TOP_K}")


def check_encodable(text: str) -> None:
    """A QueryError for text Python cannot encode (a lone surrogate from a JSON escape or a
    command line of undecodable bytes), instead of a TypeError deep in the tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise QueryError(f"the query is not valid text: character {err.start + 1} is a lone surrogate "
                         f"({text[err.start]!a}); send the sentence as UTF-8") from None


def validate_query(text: str, k: int) -> str:
    if not isinstance(text, str) or not text.strip():
        raise QueryError("the query is empty; describe the person, e.g. 'a woman in a red coat with a black bag'")
    validate_top_k(k)
    check_encodable(text)
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

    def read_image(self, entry: Entry, gen: Generation | None = None) -> bytes:
        """The bytes of `entry`'s file, only when they are the ones indexed: a regular file inside
        the images root (or uploads/) with the indexed sha256. FileNotFoundError when it is gone;
        `UnsafeFile` when a link leads out of the root or the file was replaced."""
        gen = gen or self.current()
        root = self.store.images_root(gen.meta) if entry.source == "images" else self.store.uploads
        data = regular_file_within(self.image_path(entry, gen), [root]).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise UnsafeFile(f"{entry.path} changed since it was indexed; re-run `partsearch index`")
        return data

    def entry(self, image_id: int) -> tuple[Entry, int, Generation]:
        gen = self.current()
        if image_id not in gen.rows:
            raise UnknownImage(image_id, self.store.root)
        row = gen.rows[image_id]
        return gen.entries[row], row, gen

    def encode_query(self, text: str) -> tuple[GalleryArrays, bool]:
        """The query's embeddings and whether it was cut (at MAX_QUERY_CHARS or the tokenizer limit)."""
        check_encodable(text)
        emb, truncated = self.encoder.encode_texts([text[:MAX_QUERY_CHARS]])
        return emb, bool(truncated[0]) or len(text) > MAX_QUERY_CHARS

    def query_arrays(self, text: str | None = None, image=None, like: int | None = None,
                     text_weight: float = TEXT_WEIGHT, image_name: str = "upload") -> tuple[GalleryArrays, bool, dict | None]:
        """The query's level embeddings (one row), whether its text was cut, and the query image
        ({"id"} or {"upload"}) for a text, an image (PIL image, or bytes of a JPEG/PNG/WebP), an
        indexed image `like`, or a text with an image (mixed by `text_weight`)."""
        text = text.strip() if isinstance(text, str) else text
        if image is not None and like is not None:
            raise QueryError("give an image or an indexed image id (like), not both")
        if not text and image is None and like is None:
            raise QueryError("the query is empty; describe the person, e.g. 'a woman in a red coat with a black "
                             "bag', or give a photo")
        if isinstance(text_weight, bool) or not isinstance(text_weight, (int, float)) or not 0 < text_weight < 1:
            raise QueryError(f"text_weight={text_weight!r}: use a number between 0 and 1 (exclusive)")
        truncated, described, arrays = False, None, []
        if text:
            emb, truncated = self.encode_query(text)
            arrays.append(emb)
        if like is not None:
            entry, row, gen = self.entry(like)
            a = gen.arrays
            arrays.append(GalleryArrays(*(np.asarray(x[[row]], np.float32) for x in (a.global_, a.coarse, a.fine,
                                                                                      a.foreground))))
            described = {"id": entry.id, "name": entry.name}
        elif image is not None:
            from partsearch.data.images import decode_image

            if isinstance(image, (bytes, bytearray)):
                image, _ = decode_image(bytes(image), image_name)
            arrays.append(self.encoder.encode_images([image.convert("RGB")]))
            described = {"upload": image_name}
        if len(arrays) == 1:
            return arrays[0], truncated, described
        t, i = arrays
        w = float(text_weight)
        mixed = GalleryArrays(w * t.global_ + (1 - w) * i.global_, w * t.coarse + (1 - w) * i.coarse,
                              w * t.fine + (1 - w) * i.fine, np.zeros_like(i.foreground))
        return mixed, truncated, described

    def query(self, text: str | None = None, k: int = 10, *, image=None, like: int | None = None,
              filters: Filters | None = None, text_weight: float = TEXT_WEIGHT,
              image_name: str = "upload", words: bool = True) -> SearchResponse:
        """The top `k` images for a text, an image or both (`query_arrays`), among those that pass
        `filters`; the image `like` itself is left out of its own results. With `words`, filter
        phrases in the text ("on camera 2 after 14:00", `querywords`) become filters too (the
        given `filters` take precedence field by field); the response lists them."""
        validate_top_k(k)
        filters = filters or Filters()
        text = text.strip() if isinstance(text, str) else ""
        text, filters, parsed = self._words(text, filters, words, image is not None or like is not None)
        gen = self.current()
        emb, truncated, described = self.query_arrays(text, image, like, text_weight, image_name)
        folded = self.encoder.fold_query(emb)
        mask = filters.mask(gen) if filters.selects else None
        if like is not None and mask is not None:
            mask[gen.rows[like]] = False
        # `like` itself, when unfiltered, is asked for one more and dropped
        scores, ids = self._search_allowed(gen, folded, emb.global_, k + (like is not None and mask is None), mask)
        if like is not None and mask is None:
            mine = ids[0] == like
            scores, ids = scores[:, ~mine][:, :k], ids[:, ~mine][:, :k]
        keep = ids[0] >= 0
        if filters.min_score is not None:
            keep &= scores[0] >= filters.min_score
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
                video=self._where(gen, entry) if entry.video is not None else None,
            ))
        both = bool(text) and described is not None
        return SearchResponse(text[:MAX_QUERY_CHARS], truncated, results, float(sum(self.encoder.weights)),
                              # the threshold was measured for texts against images, not images against images
                              match_threshold.for_query(gen.folded, gen.rows.values(), folded,
                                                        gen.meta.get("match_threshold"), footage=bool(gen.tracks))
                              if described is None else None,
                              described, float(text_weight) if both else None,
                              filters.to_dict() if filters else None, parsed,
                              match_threshold.rule(gen.rows, gen.meta.get("match_threshold"), bool(gen.tracks))
                              if described is None else None)

    def search(self, text: str, k: int = 10) -> list[SearchResult]:
        """The top `k` images for `text`, best first."""
        return self.query(text, k).results

    def _words(self, text: str, filters: Filters, words: bool, image: bool = False) -> tuple[str, Filters, list]:
        """The text without its filter phrases, the filters completed by them, and the phrases."""
        parsed = parse_words(text) if words and text else None
        if parsed is None or not parsed.parts:
            return text, filters, []
        if not parsed.text and not image:
            raise QueryError(f"the query names only filters ({', '.join(p['words'] for p in parsed.parts)}); "
                             "describe the person too, e.g. 'a woman in a red coat on camera 2'")
        return parsed.text, merge(filters, parsed.filters), parsed.parts

    def _search_allowed(self, gen: Generation, folded: np.ndarray, query_global, k: int,
                        mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The vector search over every row, or only over the rows `mask` allows (`filters`)."""
        if mask is None:
            return (self.vector_index or gen.vectors).search(folded, query_global, k)
        if self.vector_index is None:
            return gen.vectors.search(folded, query_global, k, rows=gen.segment_rows(mask))
        # an external index (Milvus): the allowed rows are scored exactly on the stored vectors
        scores, rows = exact_search(gen.folded, folded, k, np.flatnonzero(mask))
        return scores, np.where(rows >= 0, gen.ids[np.maximum(rows, 0)], -1)

    def query_tracks(self, text: str, k: int = 10, aggregate: str = DEFAULT_AGGREGATE,
                     filters: Filters | None = None, words: bool = True) -> TrackResponse:
        """The top `k` tracks of the index's video crops for `text`, each scored from all its
        crops' scores by `aggregate` (`tracks.AGGREGATES`). Crops come from the vector index
        until the k-th track outscores every crop not yet seen (a track's score is at most its
        best crop's), so with an exact index the ranking is exact; crops outside any track
        (plain images, uploads) are left out. With `filters` (and filter phrases in the text, as
        `query`), a track is made of its crops that pass, and `min_score` cuts tracks."""
        text = validate_query(text, k)
        if aggregate not in AGGREGATES:
            raise QueryError(f"aggregate={aggregate!r} is unknown; use one of {', '.join(AGGREGATES)}")
        gen = self.current()
        if not gen.tracks:
            raise QueryError("this index holds no tracks: index a gallery written by "
                             "`partsearch ingest` to search tracks, or search images")
        text, filters, parsed = self._words(text, filters or Filters(), words)
        mask = filters.mask(gen) if filters.selects else None
        tracks = gen.tracks if mask is None else {key: rows[mask[rows]] for key, rows in gen.tracks.items()
                                                  if mask[rows].any()}
        total = len(gen.entries) if mask is None else int(mask.sum())
        emb, truncated = self.encode_query(text)
        folded = self.encoder.fold_query(emb)
        wanted = min(total, k * TRACK_CANDIDATES)
        while True:
            scores, ids = self._search_allowed(gen, folded, emb.global_, wanted, mask)
            seen = {gen.entries[gen.rows[int(i)]].video.key for i in ids[0]
                    if int(i) in gen.rows and gen.entries[gen.rows[int(i)]].video is not None}
            ranked = self._rank_tracks(gen, tracks, seen & set(tracks), folded, aggregate)
            if filters.min_score is not None:
                ranked = [item for item in ranked if item[0] >= filters.min_score]
            unseen_bound = float(scores[0][-1]) if len(scores[0]) else float("inf")
            if wanted >= total or (len(ranked) >= k and ranked[k - 1][0] >= unseen_bound):
                break
            wanted = min(total, wanted * 4)
        results = [self._track_result(gen, tracks[key], rank, key, score, crop_scores)
                   for rank, (score, key, crop_scores) in enumerate(ranked[:k], start=1)]
        return TrackResponse(text[:MAX_QUERY_CHARS], truncated, results, aggregate,
                             float(sum(self.encoder.weights)),
                             match_threshold.for_query(gen.folded, gen.rows.values(), folded,
                                                       gen.meta.get("match_threshold"), footage=True),
                             filters.to_dict() if filters else None, parsed,
                             match_threshold.rule(gen.rows, gen.meta.get("match_threshold"), True))

    @staticmethod
    def _rank_tracks(gen: Generation, tracks: dict, keys: set, folded: np.ndarray, aggregate: str):
        """[(track score, key, crop scores in the track's row order)], best first (ties by key)."""
        ranked = []
        for key in keys:
            # s(v, t) of every crop of the track: the inner product of folded vectors, as the exact re-rank scores
            exact = np.asarray(gen.folded[tracks[key]], np.float32) @ folded[0]
            ranked.append((aggregate_scores(exact, aggregate), key, exact))
        ranked.sort(key=lambda item: (-item[0], item[1]))
        return ranked

    def _video_path(self, gen: Generation, entry: Entry) -> str:
        """The absolute path of `entry`'s video on this machine, as a user would open it (the record
        holds it relative to the images root, which reads as `../../..` from anywhere else)."""
        return os.path.abspath(self.store.images_root(gen.meta) / entry.video.video)

    def _where(self, gen: Generation, entry: Entry) -> dict:
        """A crop result's `video`: where and when it was seen, and the video's path here."""
        return {**entry.video.where(), "path": self._video_path(gen, entry)}

    def _track_result(self, gen: Generation, rows: np.ndarray, rank: int, key: tuple[str, int], score: float,
                      crop_scores: np.ndarray) -> TrackResult:
        best_row = int(rows[int(np.argmax(crop_scores))])
        entry, first, last = gen.entries[best_row], gen.entries[rows[0]], gen.entries[rows[-1]]
        best = TrackCrop(id=entry.id, score=float(np.max(crop_scores)), name=entry.name, relpath=entry.path,
                         path=str(self.store.image_path(gen.meta, entry)), frame=entry.video.frame,
                         time=entry.video.time, box=list(entry.video.box), wall_time=entry.video.wall_time)
        return TrackResult(rank=rank, video=key[0], track=key[1], camera=entry.video.camera, score=score, crops=len(rows),
                           start=first.video.time, end=last.video.time, best=best,
                           video_path=self._video_path(gen, entry), start_wall_time=first.video.wall_time,
                           end_wall_time=last.video.wall_time,
                           visits=track_visits(gen.entries, rows))

    def __len__(self) -> int:
        return len(self.current().entries)


def open_searcher(index_dir: str | Path, run_dir: str | None = None, checkpoint: str = "best") -> Searcher:
    """A Searcher over `index_dir` with the model of `run_dir` when given (the index checks it is
    the model it was built with), otherwise the run the index records."""
    encoder = None
    if run_dir:
        from partsearch.search.encoder import RunEncoder

        encoder = RunEncoder(run_dir, checkpoint)
    return Searcher(index_dir, encoder=encoder)
