"""The one exact re-rank that FAISS's approximate indexes and Milvus end with."""

import faiss
import numpy as np

from partsearch.search import vectors
from partsearch.search.vectors import FaissIndex, rerank


def test_rerank_orders_each_querys_candidates_by_the_exact_inner_product():
    query = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    vectors = np.array([[0.2, 0.9], [0.8, 0.1], [0.5, 0.5]], np.float32)
    cand = np.array([10, 11, 12])
    scores, ids = rerank([(cand, vectors), (cand, vectors)], query, 2)
    assert ids.tolist() == [[11, 12], [10, 12]]
    assert np.allclose(scores, [[0.8, 0.5], [0.9, 0.5]])


def test_rerank_pads_rows_with_fewer_candidates_than_k():
    query = np.ones((2, 2), np.float32)
    scores, ids = rerank([(np.array([7]), np.ones((1, 2), np.float32)), (np.array([], np.int64), np.zeros((0, 2)))],
                         query, 3)
    assert ids.tolist() == [[7, -1, -1], [-1, -1, -1]]
    assert scores[0, 0] == 2.0 and np.isneginf(scores[0, 1:]).all() and np.isneginf(scores[1]).all()


def test_rerank_keeps_candidate_order_among_equal_scores():
    vectors = np.ones((3, 2), np.float32)
    _, ids = rerank([(np.array([5, 3, 9]), vectors)], np.ones((1, 2), np.float32), 3)
    assert ids.tolist() == [[5, 3, 9]]


def _gallery(rows=300, width=32, seed=0):
    """Unit-norm vectors around a shared mean direction, as trained embeddings are (not centred)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, width)).astype(np.float32) + 3.0 * rng.standard_normal(width).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_over_a_float16_memmap_in_blocks_equals_one_float32_product(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors, "BLOCK_ROWS", 64)
    folded = _gallery()
    stored = np.lib.format.open_memmap(tmp_path / "folded.npy", mode="w+", dtype=np.float16, shape=folded.shape)
    stored[:] = folded
    query = _gallery(3, seed=1)
    scores, rows = vectors.exact_search(np.load(tmp_path / "folded.npy", mmap_mode="r"), query, 5)
    expected = query @ stored.astype(np.float32).T
    assert rows.tolist() == np.argsort(-expected, axis=1)[:, :5].tolist()
    np.testing.assert_allclose(scores, np.sort(expected, axis=1)[:, ::-1][:, :5], atol=1e-6)


def test_auto_is_exact_for_small_galleries_and_a_projected_inverted_file_beyond():
    assert vectors.choose_factory(vectors.EXACT_MAX, 1664) == "Flat"
    assert vectors.choose_factory(1_000_000, 1664) == "PCA256,IVF1024,SQ8"
    assert vectors.choose_factory(100_000, 64) == "PCA64,IVF256,SQ8"


def test_auto_index_reports_what_it_chose(monkeypatch):
    monkeypatch.setattr(vectors, "EXACT_MAX", 100)
    folded = _gallery()
    index = FaissIndex.build(folded, np.arange(len(folded)), vectors.AUTO)
    assert index.factory == "PCA32,IVF16,SQ8" and not index.exact
    assert "PCA32,IVF16,SQ8, nprobe 32" in index.describe() and "chosen by auto for 300 images" in index.describe()
    assert "Flat" in FaissIndex.build(folded[:50], np.arange(50), vectors.AUTO).describe()


def test_projection_is_applied_without_the_mean_shift():
    folded = _gallery()
    index = FaissIndex.build(folded, np.arange(len(folded)), "PCA8,Flat")
    pca = faiss.downcast_VectorTransform(faiss.downcast_index(index.index).chain.at(0))
    assert not faiss.vector_to_array(pca.b).any()
    projected = pca.apply(folded[:2])
    np.testing.assert_allclose(projected, folded[:2] @ faiss.vector_to_array(pca.A).reshape(8, -1).T, atol=1e-5)


def test_a_saved_projected_index_loads_with_the_same_answers(tmp_path):
    folded = _gallery()
    ids = np.arange(len(folded)) + 100
    built = FaissIndex.build(folded, ids, "PCA16,IVF4,SQ8")
    built.save(tmp_path / "vectors.faiss")
    loaded = FaissIndex.load(tmp_path / "vectors.faiss", folded, ids, "PCA16,IVF4,SQ8")
    query = _gallery(4, seed=2)
    for a, b in zip(built.search(query, None, 5), loaded.search(query, None, 5)):
        np.testing.assert_array_equal(a, b)


def test_first_stage_candidates_are_rescored_exactly_on_float16_vectors():
    folded = _gallery().astype(np.float16)
    index = FaissIndex.build(folded, np.arange(len(folded)), "PCA16,IVF4,SQ8")
    faiss.extract_index_ivf(index.index).nprobe = 4
    index.rerank_factor = 1000  # every image is a candidate: the ranking must be the exact one
    query = _gallery(3, seed=3)
    scores, ids = index.search(query, None, 5)
    exact_scores, exact_rows = vectors.exact_search(folded, query, 5)
    assert ids.tolist() == exact_rows.tolist()
    np.testing.assert_allclose(scores, exact_scores, atol=1e-6)
