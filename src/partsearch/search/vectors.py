"""Vector search over an index's folded gallery vectors: the `VectorIndex` protocol, the one exact
re-rank that every approximate backend ends with, and the FAISS backend (`milvus.MilvusIndex` is
the other).

A vector index ranks the gallery by the model's similarity s(v, t) = <fold_query(t),
fold_gallery(v)> (METHOD.md, Similarity). An approximate first stage (IVF over a projection of the
folded vectors, HNSW, IVF-PQ, Milvus) only proposes candidates; `rerank` scores them exactly on
their folded vectors, so the order among the candidates is the model's.

The folded vectors may arrive as float32 or float16, in memory or memory-mapped `(G, D)`; they are
converted to float32 one block (or one candidate set) at a time, never as a whole, so a
memory-mapped gallery of a million images is served within a few GB.

`--index-factory auto` (the default) chooses by gallery size (`choose_factory`): exact search up to
`EXACT_MAX` images; beyond, `PCA{r},IVF{nlist},SQ8` [ours]: the folded vectors projected on their
r principal directions, 8-bit scalar-quantised, in an inverted file searched at `nprobe` lists,
then `RERANK_FACTOR * k` candidates re-ranked exactly. docs/SEARCH.md and docs/BENCHMARKS.md
(section 6) give the measurements behind these numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Protocol

import faiss
import numpy as np

from partsearch.errors import SearchIndexError

AUTO = "auto"
# Approximate indexes return RERANK_FACTOR * k candidates, re-ranked exactly on the folded vectors
# [ours]: at 1M calibrated images, nprobe 32, 10 k candidates found 0.988 of the exact top 10 and
# 20 k 0.994 at the same latency (docs/BENCHMARKS.md, section 6.1).
RERANK_FACTOR = 20
# `auto` searches exactly up to this many images [ours; section 6 of docs/BENCHMARKS.md].
EXACT_MAX = 20_000
# `auto` beyond EXACT_MAX [ours, measured]: projection width, lists probed.
AUTO_PROJECTION = 256
AUTO_NPROBE = 32
# A filtered search scores up to this many allowed rows exactly, gathered from the folded vectors;
# beyond, an approximate index searches only them [ours: at 1M, converting 10,000 float16 rows took
# longer than the first stage, docs/BENCHMARKS.md section 6.5].
FILTER_EXACT_MAX = 2_000
# A filtered search re-ranks this many candidates per result [ours]: at 1M with PCA256,IVF1024,SQ8,
# recall@10 against exact filtered search was 0.988 / 0.997 / 1.000 at 20 / 50 / 100 with 1% of the
# rows allowed, 0.943 / 0.983 / 0.995 with 10% (docs/BENCHMARKS.md section 6.5).
FILTER_RERANK_FACTOR = 100
# A filtered search of an inverted file probes FILTER_PROBE * nprobe / (allowed share) lists [ours;
# 2 or 4 times more did not raise recall, docs/BENCHMARKS.md section 6.5].
FILTER_PROBE = 1.0
# Rows converted to float32 at a time by the exact scan and the build.
BLOCK_ROWS = 65_536
# Up to this size a float16 gallery is kept as one float32 copy for the exact scan (speed); above,
# it is converted block by block on every query (memory).
EXACT_CACHE_BYTES = 512 * 2**20
# Training sample of the projection and the inverted file (FAISS wants ~40 points per list).
TRAIN_MAX = 100_000


class VectorIndex(Protocol):
    """What `Searcher` needs of a vector backend."""

    def search(self, query_folded: np.ndarray, query_global: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`(Q, D)` folded and `(Q, d)` global queries -> scores `(Q, k')` and manifest ids `(Q, k')`,
        best first; ids of -1 (score -inf) pad a row with fewer results."""
        ...

    def sync(self, generation) -> None:
        """Make the backend hold exactly the images of `generation`, a `segments.Generation`
        (called when it goes live)."""
        ...


def rerank(candidates: Iterable[tuple[np.ndarray, np.ndarray]], query_folded: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact re-rank [ours]: for query q, its candidates `(C,)` (ids or rows) with their folded
    vectors `(C, D)` (any float dtype) are scored s = vectors @ query_folded[q] in float32 (row q of
    `fold_query @ fold_gallery.T`, texts x images as every similarity in `model.similarity`) and the
    best k kept, best first (ties in candidate order). Returns scores `(Q, k)` and candidates
    `(Q, k)`, padded with -inf / -1."""
    scores = np.full((len(query_folded), k), -np.inf, np.float32)
    chosen = np.full((len(query_folded), k), -1, np.int64)
    for q, (cand, vectors) in enumerate(candidates):
        if not len(cand):
            continue
        exact = np.asarray(vectors, np.float32) @ np.asarray(query_folded[q], np.float32)
        order = np.argsort(-exact, kind="stable")[:k]
        scores[q, : len(order)] = exact[order]
        chosen[q, : len(order)] = cand[order]
    return scores, chosen


def exact_search(folded: np.ndarray, query_folded: np.ndarray, k: int,
                 rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum inner product over the rows of `folded` `(G, D)` (any float dtype, memory-mapped
    or not), all of them or only the sorted `rows`, one float32 block of `BLOCK_ROWS` rows at a
    time: scores and rows `(Q, k)`, best first."""
    query = np.ascontiguousarray(query_folded, dtype=np.float32)
    if rows is not None:
        return _exact_rows(folded, query, k, rows)
    k = min(k, len(folded))
    heap = faiss.ResultHeap(len(query), k, keep_max=True)
    for start in range(0, len(folded), BLOCK_ROWS):
        block = np.ascontiguousarray(folded[start:start + BLOCK_ROWS], dtype=np.float32)
        scores, found = faiss.knn(query, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, np.where(found >= 0, found + start, -1))
    heap.finalize()
    return heap.D, heap.I


def _exact_rows(folded: np.ndarray, query: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`exact_search` over the sorted `rows` only: each block gathered, scored with one matrix
    product and merged into the running top k (ties in row order)."""
    k = min(k, len(rows))
    best_scores = np.zeros((len(query), 0), np.float32)
    best_rows = np.zeros((len(query), 0), np.int64)
    for start in range(0, len(rows), BLOCK_ROWS):
        chosen = rows[start:start + BLOCK_ROWS]
        scores = query @ np.asarray(folded[chosen], np.float32).T  # (Q, n)
        scores = np.concatenate([best_scores, scores], axis=1)
        candidates = np.concatenate([best_rows, np.broadcast_to(chosen, (len(query), len(chosen)))], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_rows = np.take_along_axis(scores, order, 1), np.take_along_axis(candidates, order, 1)
    return best_scores.astype(np.float32), best_rows


def choose_factory(count: int, width: int) -> str:
    """The first stage `auto` picks for `count` folded vectors of width D [ours]: exact up to
    EXACT_MAX; beyond, a projection on min(D, AUTO_PROJECTION) principal directions in an inverted
    file of about sqrt(G) lists (a power of two) with 8-bit codes."""
    if count <= EXACT_MAX:
        return "Flat"
    nlist = 2 ** round(math.log2(math.sqrt(count)))
    return f"PCA{min(width, AUTO_PROJECTION)},IVF{nlist},SQ8"


def _train_sample(folded: np.ndarray, size: int) -> np.ndarray:
    rows = np.sort(np.random.default_rng(0).choice(len(folded), size, replace=False)) if size < len(folded) \
        else np.arange(len(folded))
    return np.ascontiguousarray(folded[rows], dtype=np.float32)


def _projection_without_shift(index: faiss.Index) -> None:
    """Make the PCA of an `IndexPreTransform` a pure projection x -> A x, without the mean shift
    [ours]. Inner products, unlike distances, change under a shift: <A(q - m), A(v - m)> adds
    -<A m, A v>, a term that differs between images and would bias the ranking. The directions stay
    the centred covariance's, so the part of q.v the projection misses, q.(I - A'A)v, differs between
    images only through their deviation from the mean, which those directions capture best."""
    pca = faiss.downcast_VectorTransform(faiss.downcast_index(index).chain.at(0))
    faiss.copy_array_to_vector(np.zeros(pca.d_out, np.float32), pca.b)


def _resolved(factory: str, folded: np.ndarray) -> str:
    """The factory `auto` stands for at this size (`choose_factory`); any other one as it is."""
    return choose_factory(len(folded), folded.shape[1]) if factory == AUTO else factory


class FaissIndex:
    """A `VectorIndex`: inner-product search over the folded vectors; ids are manifest ids.

    `Flat` is exact maximum-inner-product search (`exact_search`), so it returns exactly the
    model's ranking. Any other FAISS factory string is a first stage: `PCA{r},...` is trained on
    the folded vectors and applied without the mean shift (`_projection_without_shift`), then
    `RERANK_FACTOR * k` of its candidates are re-ranked exactly on the stored folded vectors [ours].
    `auto` is resolved by `choose_factory` when the index is built.
    """

    def __init__(self, index: faiss.Index | None, folded: np.ndarray, ids: np.ndarray, factory: str,
                 requested: str | None = None):
        self.index = index
        self.folded = folded
        self.ids = ids
        self.factory = factory  # what was built
        self.requested = requested or factory  # what was asked for (`auto` or a factory string)
        self.rerank_factor = RERANK_FACTOR
        self.filter_probe = FILTER_PROBE
        self.filter_rerank_factor = FILTER_RERANK_FACTOR
        nbytes = folded.shape[0] * folded.shape[1] * 4
        self._exact32 = (np.ascontiguousarray(folded, dtype=np.float32)
                         if index is None and nbytes <= EXACT_CACHE_BYTES else None)

    @property
    def exact(self) -> bool:
        return self.index is None

    @classmethod
    def build(cls, folded: np.ndarray, ids: np.ndarray, factory: str = AUTO) -> "FaissIndex":
        requested, factory = factory, _resolved(factory, folded)
        if factory == "Flat":
            return cls(None, folded, ids, factory, requested)
        try:
            index = faiss.index_factory(folded.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:
                ivf = faiss.try_extract_index_ivf(index)
                sample = _train_sample(folded, min(len(folded), max(TRAIN_MAX, 40 * ivf.nlist if ivf else 0)))
                if factory.startswith("PCA"):
                    pre = faiss.downcast_index(index)
                    pre.chain.at(0).train(sample)
                    _projection_without_shift(pre)
                    pre.index.train(pre.chain.at(0).apply(sample))
                    pre.is_trained = True
                else:
                    index.train(sample)
                if ivf is not None and requested == AUTO:
                    ivf.nprobe = AUTO_NPROBE
            for start in range(0, len(folded), BLOCK_ROWS):
                index.add(np.ascontiguousarray(folded[start:start + BLOCK_ROWS], dtype=np.float32))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
            raise SearchIndexError(
                f"--index-factory {factory!r} cannot index {len(folded)} vectors of width {folded.shape[1]}: "
                f"{first}; use auto, Flat (exact) or HNSW32 for small galleries"
            ) from None
        return cls(index, folded, ids, factory, requested)

    @classmethod
    def load(cls, path: Path, folded: np.ndarray, ids: np.ndarray, factory: str) -> "FaissIndex":
        """Read `vectors.faiss`; rebuild it from the folded vectors when missing or stale. An exact
        index (`Flat`, or `auto` on a small gallery) has no file."""
        built = _resolved(factory, folded)
        if built == "Flat":
            return cls(None, folded, ids, "Flat", factory)
        if path.is_file():
            try:
                index = faiss.read_index(str(path))
                if index.ntotal == len(folded) and index.d == folded.shape[1]:
                    return cls(index, folded, ids, built, factory)
            except RuntimeError:
                pass
        return cls.build(folded, ids, factory)

    def sync(self, generation) -> None:
        """Nothing to do: a FAISS index is built with its generation and never changes."""

    def save(self, path: Path) -> None:
        """Write the first stage to `path` (an exact index has nothing to write)."""
        if self.index is not None:
            faiss.write_index(self.index, str(path))

    def describe(self) -> str:
        """What was built, in words, for the user (`partsearch index` prints it)."""
        if self.exact:
            how = "Flat: exact search over the folded vectors"
        else:
            ivf = faiss.try_extract_index_ivf(self.index)
            probe = f", nprobe {ivf.nprobe}" if ivf is not None else ""
            how = f"{self.factory}{probe}: approximate first stage, {self.rerank_factor} x k candidates re-ranked exactly"
        return f"{how} ({'chosen by auto for ' + format(len(self), ',') + ' images' if self.requested == AUTO else 'as requested'})"

    def __len__(self) -> int:
        return int(len(self.folded))

    def search(self, query_folded: np.ndarray, query_global: np.ndarray | None, k: int,
               rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`(Q, D)` queries -> scores `(Q, k')` and ids `(Q, k')`, k' = min(k, G), best first. With
        `rows` (sorted row positions) only those rows are searched (`_search_rows`)."""
        query = np.ascontiguousarray(query_folded, dtype=np.float32)
        if rows is not None:
            scores, found = self._search_rows(query, k, np.asarray(rows, np.int64))
        elif min(k, len(self)) == 0:
            return np.zeros((len(query), 0), np.float32), np.zeros((len(query), 0), np.int64)
        elif self.exact:
            scores, found = exact_search(self._exact32 if self._exact32 is not None else self.folded, query,
                                         min(k, len(self)))
        else:
            _, cand = self.index.search(query, min(len(self), k * self.rerank_factor))
            # Sorted rows read a memory-mapped file in order.
            scores, found = rerank(((c, self.folded[c]) for c in (np.sort(c[c >= 0]) for c in cand)), query,
                                   min(k, len(self)))
        ids = np.where(found >= 0, self.ids[np.maximum(found, 0)], -1)
        return scores, ids

    def _search_rows(self, query: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A filtered search inside the index [ours]: up to FILTER_EXACT_MAX allowed rows (or with an
        exact index) they are scored exactly, gathered from the folded vectors; beyond, the first stage
        searches only them (a FAISS `IDSelectorBitmap`) and its `FILTER_RERANK_FACTOR * k` candidates are
        re-ranked exactly, and a query it finds fewer than min(k, allowed) for is scored exactly
        over all allowed rows, so a filter never returns fewer than k results while k exist."""
        k = min(k, len(rows))
        if k == 0:
            return np.zeros((len(query), 0), np.float32), np.zeros((len(query), 0), np.int64)
        if self.exact or len(rows) <= FILTER_EXACT_MAX:
            source = self._exact32 if self._exact32 is not None else self.folded
            return exact_search(source, query, k, rows)
        try:
            _, cand = self.index.search(query, min(len(rows), k * self.filter_rerank_factor),
                                        params=self._selector_params(rows))
        except RuntimeError:  # a factory whose search takes no selector: exact over the allowed rows
            return exact_search(self.folded, query, k, rows)
        scores, found = rerank(((c, self.folded[c]) for c in (np.sort(c[c >= 0]) for c in cand)), query, k)
        short = np.flatnonzero((found >= 0).sum(axis=1) < k)
        if len(short):
            scores[short], found[short] = exact_search(self.folded, query[short], k, rows)
        return scores, found

    def _selector_params(self, rows: np.ndarray):
        """FAISS search parameters that admit only `rows` (a bitmap over the index's rows). An
        inverted file probes nprobe / (allowed share) lists, all of them at most [ours]: the
        allowed vectors nearest the query lie further out than the nearest of all, and this
        probes about as many allowed vectors as an unfiltered search probes vectors."""
        allowed = np.zeros(len(self), bool)
        allowed[rows] = True
        bitmap = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bitmap))
        selector.bitmap_array = bitmap  # the bitmap must outlive the call
        inner = faiss.downcast_index(self.index)
        pre = isinstance(inner, faiss.IndexPreTransform)
        base = faiss.downcast_index(inner.index) if pre else inner
        ivf = faiss.try_extract_index_ivf(base)
        if ivf is not None:
            nprobe = min(ivf.nlist, math.ceil(self.filter_probe * ivf.nprobe * len(self) / max(1, len(rows))))
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        elif isinstance(base, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=base.hnsw.efSearch)
        else:
            params = faiss.SearchParameters(sel=selector)
        params.keep = selector
        if pre:
            outer = faiss.SearchParametersPreTransform()
            outer.index_params, outer.keep = params, params
            return outer
        return params


def check_factory(factory: str, dim: int) -> None:
    """Refuse a string FAISS cannot parse before any image is embedded (whether the gallery is
    large enough for it is known only at the end)."""
    if factory == AUTO:
        return
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError:
        raise SearchIndexError(
            f"--index-factory {factory!r} is not a FAISS index factory string; use auto (chosen by size), "
            "Flat (exact), HNSW32 or PCA256,IVF1024,SQ8 (approximate)"
        ) from None
