"""The one exact re-rank that FAISS's approximate indexes and Milvus end with."""

import numpy as np

from partsearch.search.vectors import rerank


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
