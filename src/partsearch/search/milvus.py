"""The gallery vectors in Milvus, for galleries beyond one machine (`pymilvus`).

`MilvusIndex` is a `vectors.VectorIndex`, as `vectors.FaissIndex` is (`search(query_folded,
query_global, k) -> (scores (Q, k), ids (Q, k))`, `sync(generation)`), so `Searcher(index_dir, vector_index=MilvusIndex(...))` and the
HTTP service use it unchanged. Search is two-stage [ours]: an approximate first stage on the global
vectors g_v (HNSW by default) returns `rerank_factor * k` candidates, which are re-ranked exactly by
the full similarity s(v, t) = <fold_query(t), fold_gallery(v)> on the folded vectors stored beside
them (METHOD.md, Similarity), by the same `vectors.rerank` as FAISS's approximate indexes. With `rerank_factor * k >= G` the ranking is exactly the model's.

The local index directory stays the source of truth (manifest, part embeddings and foreground maps
for explanations); Milvus holds one row per image: `id` (the manifest id), `global` (d) and
`folded` (D). `sync(generation)` makes the collection match a generation (inserts the new ids,
deletes the dropped ones); the Searcher calls it whenever its generation changes.

Running against a Milvus cluster:

    from partsearch.search.milvus import MilvusIndex
    from partsearch.search.searcher import Searcher
    vectors = MilvusIndex("http://milvus.example:19530", collection="people", token="user:password")
    searcher = Searcher("INDEX_DIR", vector_index=vectors)   # syncs the collection on start

Locally, `milvus-lite server --data-dir DIR --host 127.0.0.1 --port P` serves the same gRPC API
(`uri="http://127.0.0.1:P"`), and `uri="./file.db"` runs milvus-lite embedded. docs/SEARCH.md has
the sizing notes.
"""

from __future__ import annotations

import numpy as np

from partsearch.errors import SearchIndexError
from partsearch.search.vectors import rerank

DEFAULT_RERANK_FACTOR = 10  # [ours]
DEFAULT_EF = 64  # HNSW's search breadth; raised to the number of candidates asked for, as Milvus requires
MAX_CANDIDATES = 16384  # Milvus's limit on topk
_INSERT_BATCH = 1000


class MilvusIndex:
    """Gallery vectors in one Milvus collection; see the module docstring."""

    def __init__(self, uri: str, collection: str = "partsearch", token: str = "",
                 rerank_factor: int = DEFAULT_RERANK_FACTOR, index_type: str = "HNSW",
                 index_params: dict | None = None, timeout: float = 30.0, search_params: dict | None = None):
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        self._error = MilvusException
        try:
            self.client = MilvusClient(uri=uri, token=token, timeout=timeout)
        except MilvusException as err:
            raise SearchIndexError(f"cannot reach Milvus at {uri}: {err}") from None
        self.uri = uri
        self.collection = collection
        self.rerank_factor = rerank_factor
        self.index_type = index_type
        self.index_params = index_params if index_params is not None else (
            {"M": 16, "efConstruction": 200} if index_type == "HNSW" else {})
        # The search parameters of the first stage (HNSW: ef; IVF: nprobe), as Milvus names them.
        self.search_params = search_params if search_params is not None else (
            {"ef": DEFAULT_EF} if index_type == "HNSW" else {})
        self.dims: tuple[int, int] | None = None

    def _ensure(self, dim_global: int, dim_folded: int) -> None:
        from pymilvus import DataType

        if self.dims == (dim_global, dim_folded):
            return
        if self.client.has_collection(self.collection):
            fields = {f["name"]: f for f in self.client.describe_collection(self.collection)["fields"]}
            have = (fields.get("global", {}).get("params", {}).get("dim"),
                    fields.get("folded", {}).get("params", {}).get("dim"))
            if tuple(int(x) if x is not None else None for x in have) != (dim_global, dim_folded):
                raise SearchIndexError(
                    f"Milvus collection {self.collection!r} at {self.uri} holds vectors of width {have}, "
                    f"not ({dim_global}, {dim_folded}); drop it or pick another collection name"
                )
        else:
            schema = self.client.create_schema(auto_id=False, description="partsearch gallery")
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("global", DataType.FLOAT_VECTOR, dim=dim_global)
            schema.add_field("folded", DataType.FLOAT_VECTOR, dim=dim_folded)
            params = self.client.prepare_index_params()
            params.add_index("global", index_type=self.index_type, metric_type="IP", params=self.index_params)
            # Folded vectors are only fetched for re-ranking, never searched; Milvus still wants an index.
            params.add_index("folded", index_type="FLAT", metric_type="IP")
            self.client.create_collection(self.collection, schema=schema, index_params=params)
        self.client.load_collection(self.collection)
        self.dims = (dim_global, dim_folded)

    def add(self, ids: np.ndarray, folded: np.ndarray, global_: np.ndarray) -> None:
        self._ensure(int(global_.shape[1]), int(folded.shape[1]))
        for start in range(0, len(ids), _INSERT_BATCH):
            rows = [{"id": int(i), "global": np.asarray(g, np.float32).tolist(), "folded": np.asarray(f, np.float32).tolist()}
                    for i, g, f in zip(ids[start:start + _INSERT_BATCH], global_[start:start + _INSERT_BATCH],
                                       folded[start:start + _INSERT_BATCH])]
            self.client.upsert(self.collection, rows)

    def remove(self, ids) -> None:
        ids = [int(i) for i in ids]
        if ids and self.client.has_collection(self.collection):
            self.client.delete(self.collection, ids=ids)

    def ids(self) -> set[int]:
        if not self.client.has_collection(self.collection):
            return set()
        iterator = self.client.query_iterator(self.collection, batch_size=1000, filter="", output_fields=["id"])
        found: set[int] = set()
        while batch := iterator.next():
            found.update(int(row["id"]) for row in batch)
        iterator.close()
        return found

    def sync(self, generation) -> None:
        """Make the collection hold exactly the images of an index `Generation`."""
        self._ensure(int(generation.arrays.global_.shape[1]), int(generation.folded.shape[1]))
        present = self.ids()
        wanted = {e.id: row for row, e in enumerate(generation.entries)}
        self.remove(present - wanted.keys())
        new_rows = np.array(sorted(wanted[i] for i in wanted.keys() - present), dtype=np.int64)
        if len(new_rows):
            ids = np.array([generation.entries[r].id for r in new_rows], np.int64)
            self.add(ids, generation.folded[new_rows], np.asarray(generation.arrays.global_[new_rows]))

    def __len__(self) -> int:
        if not self.client.has_collection(self.collection):
            return 0
        return int(self.client.query(self.collection, filter="", output_fields=["count(*)"])[0]["count(*)"])

    def describe(self) -> dict:
        """The index the server reports for the global vectors (`describe_index`): its type,
        metric, build parameters and rows indexed; {} before the collection exists. Milvus may
        search a segment exhaustively while it is not indexed (growing, or too small), whatever
        this says; docs/BENCHMARKS.md section 6 has what milvus-lite actually did."""
        if not self.client.has_collection(self.collection):
            return {}
        return dict(self.client.describe_index(self.collection, "global"))

    def drop(self) -> None:
        self.client.drop_collection(self.collection)
        self.dims = None

    def search(self, query_folded: np.ndarray, query_global: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`(Q, D)` and `(Q, d)` queries -> exact scores and ids `(Q, k)`, best first, -1 padded."""
        query_folded = np.asarray(query_folded, np.float32)
        if not self.client.has_collection(self.collection):
            return rerank([], query_folded, k)  # no candidates: every row padded
        limit = min(MAX_CANDIDATES, max(k, k * self.rerank_factor))
        params = dict(self.search_params)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), limit)
        hits = self.client.search(self.collection, data=np.asarray(query_global, np.float32).tolist(),
                                  anns_field="global", limit=limit, output_fields=["folded"],
                                  search_params={"metric_type": "IP", "params": params})
        candidates = ((np.array([h["id"] for h in found], np.int64), np.array([h["entity"]["folded"] for h in found], np.float32))
                      for found in hits)
        return rerank(candidates, query_folded, k)
