"""Vector search over an index's folded gallery vectors: the `VectorIndex` protocol, the one exact
re-rank that every approximate backend ends with, and the FAISS backend (`milvus.MilvusIndex` is
the other).

A vector index ranks the gallery by the model's similarity s(v, t) = <fold_query(t),
fold_gallery(v)> (METHOD.md, Similarity). An approximate first stage (HNSW, IVF-PQ, Milvus) only
proposes candidates; `rerank` scores them exactly on their folded vectors, so the order among the
candidates is the model's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Protocol

import faiss
import numpy as np

from partsearch.errors import SearchIndexError

if TYPE_CHECKING:
    from partsearch.search.store import Generation

# Approximate indexes return RERANK_FACTOR * k candidates, re-ranked exactly on the folded vectors [ours].
RERANK_FACTOR = 10


class VectorIndex(Protocol):
    """What `Searcher` needs of a vector backend."""

    def search(self, query_folded: np.ndarray, query_global: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`(Q, D)` folded and `(Q, d)` global queries -> scores `(Q, k')` and manifest ids `(Q, k')`,
        best first; ids of -1 (score -inf) pad a row with fewer results."""
        ...

    def sync(self, generation: Generation) -> None:
        """Make the backend hold exactly the images of `generation` (called when it goes live)."""
        ...


def rerank(candidates: Iterable[tuple[np.ndarray, np.ndarray]], query_folded: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact re-rank [ours]: for query q, its candidates `(C,)` (ids or rows) with their folded
    vectors `(C, D)` are scored s = vectors @ query_folded[q] (row q of `fold_query @ fold_gallery.T`,
    texts x images as every similarity in `model.similarity`) and the best k kept, best first (ties
    in candidate order). Returns scores `(Q, k)` and candidates `(Q, k)`, padded with -inf / -1."""
    scores = np.full((len(query_folded), k), -np.inf, np.float32)
    chosen = np.full((len(query_folded), k), -1, np.int64)
    for q, (cand, vectors) in enumerate(candidates):
        if not len(cand):
            continue
        exact = np.asarray(vectors, np.float32) @ query_folded[q]
        order = np.argsort(-exact, kind="stable")[:k]
        scores[q, : len(order)] = exact[order]
        chosen[q, : len(order)] = cand[order]
    return scores, chosen


class FaissIndex:
    """A `VectorIndex`: inner-product search over the folded vectors; ids are manifest ids.

    `Flat` is exact maximum-inner-product search, so it returns exactly the model's ranking.
    Any other FAISS factory string (HNSW32, IVF1024,PQ32, ...) gives candidates that are then
    re-ranked exactly on the stored folded vectors [ours].
    """

    def __init__(self, index: faiss.Index, folded: np.ndarray, ids: np.ndarray, factory: str):
        self.index = index
        self.folded = folded
        self.ids = ids
        self.factory = factory

    @property
    def exact(self) -> bool:
        return self.factory == "Flat"

    @classmethod
    def build(cls, folded: np.ndarray, ids: np.ndarray, factory: str = "Flat") -> "FaissIndex":
        folded = np.ascontiguousarray(folded, dtype=np.float32)
        try:
            index = faiss.index_factory(folded.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:
                index.train(folded)
            index.add(folded)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
            raise SearchIndexError(
                f"--index-factory {factory!r} cannot index {len(folded)} vectors of width {folded.shape[1]}: "
                f"{first}; use Flat (exact) or HNSW32 for small galleries"
            ) from None
        return cls(index, folded, ids, factory)

    @classmethod
    def load(cls, path: Path, folded: np.ndarray, ids: np.ndarray, factory: str) -> "FaissIndex":
        """Read `vectors.faiss`; rebuild it from the folded vectors when missing or stale."""
        if path.is_file():
            try:
                index = faiss.read_index(str(path))
                if index.ntotal == len(folded) and index.d == folded.shape[1]:
                    return cls(index, np.ascontiguousarray(folded, dtype=np.float32), ids, factory)
            except RuntimeError:
                pass
        return cls.build(folded, ids, factory)

    def sync(self, generation: Generation) -> None:
        """Nothing to do: a FAISS index is built with its generation and never changes."""

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query_folded: np.ndarray, query_global: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`(Q, D)` queries -> scores `(Q, k')` and ids `(Q, k')`, k' = min(k, G), best first."""
        query = np.ascontiguousarray(query_folded, dtype=np.float32)
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(query), 0), np.float32), np.zeros((len(query), 0), np.int64)
        if self.exact:
            scores, rows = self.index.search(query, k)
        else:
            _, cand = self.index.search(query, min(len(self), k * RERANK_FACTOR))
            scores, rows = rerank(((c[c >= 0], self.folded[c[c >= 0]]) for c in cand), query, k)
        ids = np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)
        return scores, ids


def check_factory(factory: str, dim: int) -> None:
    """Refuse a string FAISS cannot parse before any image is embedded (whether the gallery is
    large enough for it is known only at the end)."""
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError:
        raise SearchIndexError(
            f"--index-factory {factory!r} is not a FAISS index factory string; use Flat (exact), HNSW32 "
            "or IVF1024,PQ32 (approximate)"
        ) from None
