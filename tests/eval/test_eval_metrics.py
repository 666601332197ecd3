"""retrieval_metrics: the community's R@K / mAP / mINP, exact, chunked, with pessimistic ties."""

import pytest
import torch

from partsearch.eval import metrics
from partsearch.eval.metrics import _count_at_least, _count_dtype, retrieval_metrics


def full_sort_reference(similarity, query_ids, gallery_ids, ks=(1, 5, 10)):
    """IRRA's `rank` (argsort of the whole matrix), the definition the metrics must reproduce."""
    indices = torch.argsort(similarity, dim=1, descending=True)
    matches = gallery_ids[indices].eq(query_ids.view(-1, 1))
    cmc = matches.cumsum(1).clamp(max=1).double().mean(0) * 100
    hits = matches.cumsum(1).double()
    last = torch.stack([row.nonzero()[-1, 0] for row in matches])
    inp = hits.gather(1, last.view(-1, 1)).squeeze(1) / (last + 1.0)
    precision = hits / torch.arange(1, matches.shape[1] + 1) * matches
    ap = precision.sum(1) / matches.sum(1)
    result = {f"R{k}": float(cmc[min(k, matches.shape[1]) - 1]) for k in ks}
    return result | {"mAP": float(ap.mean() * 100), "mINP": float(inp.mean() * 100)}


def pessimistic_reference(similarity, query_ids, gallery_ids, ks=(1, 5, 10)):
    """One query at a time, ties pessimistic: the k-th relevant item (relevant scores sorted
    descending) is ranked k + the number of irrelevant items scoring at least as high."""
    first, ap, inp = [], [], []
    for row, query in zip(similarity.double(), query_ids):
        relevant = gallery_ids == query
        scores = row[relevant].sort(descending=True).values
        ranks = [k + int((row[~relevant] >= score).sum()) for k, score in enumerate(scores.tolist(), 1)]
        first.append(ranks[0])
        ap.append(sum(k / rank for k, rank in enumerate(ranks, 1)) / len(ranks))
        inp.append(len(ranks) / ranks[-1])
    result = {f"R{k}": 100 * sum(rank <= k for rank in first) / len(first) for k in ks}
    return result | {"mAP": 100 * sum(ap) / len(ap), "mINP": 100 * sum(inp) / len(inp)}


def random_case(num_queries, num_gallery, num_ids, seed):
    generator = torch.Generator().manual_seed(seed)
    gallery_ids = torch.randint(0, num_ids, (num_gallery,), generator=generator)
    query_ids = gallery_ids[torch.randint(0, num_gallery, (num_queries,), generator=generator)]
    similarity = torch.rand(num_queries, num_gallery, generator=generator)
    return similarity, query_ids, gallery_ids


def test_several_relevant_items_give_hand_computed_ap_and_inp():
    # Relevant items (id 7) land at ranks 1, 4 and 5.
    similarity = torch.tensor([[0.9, 0.8, 0.5, 0.7, 0.1]])
    result = retrieval_metrics(similarity, [7], [7, 3, 7, 5, 7])
    assert result["R1"] == 100.0
    assert result["mAP"] == pytest.approx(100 * (1 / 1 + 2 / 4 + 3 / 5) / 3)
    assert result["mINP"] == pytest.approx(100 * 3 / 5)


def test_relevant_item_ranked_last_scores_one_over_gallery_size():
    similarity = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    result = retrieval_metrics(similarity, [4], [1, 2, 3, 4], ks=(1, 3, 4))
    assert result["R1"] == 0.0
    assert result["R3"] == 0.0
    assert result["R4"] == 100.0
    assert result["mAP"] == pytest.approx(25.0)
    assert result["mINP"] == pytest.approx(25.0)


def test_single_relevant_item_at_rank_two():
    similarity = torch.tensor([[0.2, 0.9, 0.1]])
    result = retrieval_metrics(similarity, [0], [0, 1, 2])
    assert result["R1"] == 0.0
    assert result["R5"] == 100.0
    assert result["mAP"] == pytest.approx(50.0)
    assert result["mINP"] == pytest.approx(50.0)


def test_metrics_are_averaged_over_queries():
    similarity = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    result = retrieval_metrics(similarity, [0, 1], [0, 1])
    assert result["R1"] == pytest.approx(50.0)
    assert result["mAP"] == pytest.approx(100 * (1 + 1 / 2) / 2)


def test_returns_the_standard_keys_as_python_numbers():
    similarity, query_ids, gallery_ids = random_case(5, 12, 3, seed=0)
    result = retrieval_metrics(similarity, query_ids, gallery_ids)
    assert list(result) == ["R1", "R5", "R10", "mAP", "mINP"]
    assert all(type(value) is float for value in result.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_full_sort_reference_on_random_scores(seed):
    similarity, query_ids, gallery_ids = random_case(300, 240, 40, seed)
    ours = retrieval_metrics(similarity, query_ids, gallery_ids)
    reference = full_sort_reference(similarity, query_ids, gallery_ids)
    assert ours == pytest.approx(reference, abs=1e-6)


def test_matches_reference_in_float64_and_with_several_images_per_identity():
    similarity, query_ids, gallery_ids = random_case(50, 400, 5, seed=3)
    similarity = similarity.double()
    ours = retrieval_metrics(similarity, query_ids, gallery_ids, ks=(1, 2, 50))
    assert ours == pytest.approx(full_sort_reference(similarity, query_ids, gallery_ids, ks=(1, 2, 50)), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_one_query_at_a_time_reference_with_many_ties(seed):
    similarity, query_ids, gallery_ids = random_case(150, 400, 12, seed)
    similarity = (similarity * 8).round() / 8  # nine distinct scores: ties everywhere
    ours = retrieval_metrics(similarity, query_ids, gallery_ids, ks=(1, 5, 10, 50))
    reference = pessimistic_reference(similarity, query_ids, gallery_ids, ks=(1, 5, 10, 50))
    assert ours == pytest.approx(reference, rel=1e-12, abs=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores_give_the_float32_results_of_the_same_values(dtype):
    # Past 2,048 items: a float16 running count would no longer be exact.
    similarity, query_ids, gallery_ids = random_case(20, 2500, 4, seed=6)
    similarity = similarity.to(dtype)
    assert retrieval_metrics(similarity, query_ids, gallery_ids) == retrieval_metrics(
        similarity.float(), query_ids, gallery_ids
    )


def test_counts_widen_to_float64_past_float32s_exact_integers():
    cpu = torch.device("cpu")
    assert _count_dtype(torch.float32, 2**24, cpu) == torch.float32
    assert _count_dtype(torch.float32, 2**24 + 1, cpu) == torch.float64
    assert _count_dtype(torch.float16, 100, cpu) == torch.float32
    assert _count_dtype(torch.float64, 100, cpu) == torch.float64


def test_bool_buffer_used_off_cpu_counts_as_the_float_buffer():
    generator = torch.Generator().manual_seed(7)
    x = (torch.rand(6, 50, generator=generator) * 10).round()
    scores = x[:, :4].sort(dim=1, descending=True).values
    rows_with = [6, 6, 4, 1]  # rows sorted by their number of relevant items
    counts = [
        _count_at_least(x, scores, rows_with, torch.empty(6, 50, dtype=dtype)) for dtype in (torch.bool, torch.float32)
    ]
    assert torch.equal(counts[0], counts[1])
    assert counts[1][0, 0] == (x[0] >= scores[0, 0]).sum()


def test_results_do_not_depend_on_memory_budget():
    similarity, query_ids, gallery_ids = random_case(97, 130, 17, seed=4)
    results = [
        retrieval_metrics(similarity, query_ids, gallery_ids, memory_budget_mb=budget)
        for budget in (1e-6, 0.01, 0.1, 256)
    ]
    assert all(result == results[0] for result in results[1:])


def test_ties_rank_irrelevant_items_first():
    similarity = torch.tensor([[0.5, 0.5, 0.5]])
    result = retrieval_metrics(similarity, [1], [1, 2, 2])
    assert result["R1"] == 0.0
    assert result["mAP"] == pytest.approx(100 / 3)
    assert result["mINP"] == pytest.approx(100 / 3)


def test_tied_relevant_items_take_consecutive_ranks_after_tied_irrelevant_ones():
    # Scores: irrelevant 0.9; relevant 0.5, 0.5 tied with irrelevant 0.5; relevant 0.1.
    similarity = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]])
    result = retrieval_metrics(similarity, [3], [3, 0, 3, 1, 3])
    assert result["mAP"] == pytest.approx(100 * (1 / 3 + 2 / 4 + 3 / 5) / 3)
    assert result["mINP"] == pytest.approx(100 * 3 / 5)


def test_constant_similarity_gets_the_worst_ranks():
    similarity = torch.zeros(4, 8)
    result = retrieval_metrics(similarity, [0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6, 7])
    assert result["R5"] == 0.0
    assert result["mAP"] == pytest.approx(100 / 8)


def test_query_without_relevant_item_is_an_error_that_counts_them():
    similarity = torch.rand(3, 4)
    with pytest.raises(ValueError, match="2 of 3 queries have no gallery item"):
        retrieval_metrics(similarity, [0, 8, 9], [0, 1, 2, 3])


def test_skip_flag_leaves_unmatched_queries_out_and_counts_them():
    similarity, query_ids, gallery_ids = random_case(20, 30, 6, seed=5)
    query_ids = torch.cat([query_ids, torch.tensor([100, 101])])
    padded = torch.cat([similarity, torch.rand(2, 30)])
    result = retrieval_metrics(padded, query_ids, gallery_ids, skip_queries_without_match=True)
    assert result.pop("queries_without_match") == 2
    assert result == retrieval_metrics(similarity, query_ids[:20], gallery_ids)


def test_skip_flag_with_no_query_matched_is_an_error():
    with pytest.raises(ValueError, match="none of the 2 queries"):
        retrieval_metrics(torch.rand(2, 3), [5, 6], [0, 1, 2], skip_queries_without_match=True)


def test_k_larger_than_gallery_counts_the_whole_gallery():
    similarity = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    result = retrieval_metrics(similarity, [0, 2], [0, 1, 2], ks=(1, 50))
    assert result["R1"] == 0.0
    assert result["R50"] == 100.0


def test_nan_score_is_an_error():
    similarity = torch.tensor([[0.1, float("nan")]])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(similarity, [0], [0, 1])


def test_mismatched_id_counts_are_an_error():
    with pytest.raises(ValueError, match="2 x 3 but there are 2 query ids and 4 gallery ids"):
        retrieval_metrics(torch.rand(2, 3), [0, 1], [0, 1, 2, 3])


def test_float_ids_are_rejected():
    with pytest.raises(ValueError, match="integer identities"):
        retrieval_metrics(torch.rand(1, 2), torch.tensor([0.0]), [0, 1])


def test_infinite_scores_rank_first_and_last_without_error():
    similarity = torch.tensor([[float("inf"), float("-inf"), 0.5], [0.2, float("-inf"), float("inf")]])
    result = retrieval_metrics(similarity, [0, 1], [0, 1, 2])
    assert result["R1"] == 50.0
    assert result["mAP"] == pytest.approx(100 * (1 + 1 / 3) / 2)


def test_thread_count_is_restored_after_success_and_error():
    threads = torch.get_num_threads()
    retrieval_metrics(torch.rand(3, 4), [0, 1, 2], [0, 1, 2, 3])
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError):
        retrieval_metrics(torch.tensor([[float("nan"), 0.0]]), [0], [0, 1])
    assert torch.get_num_threads() == threads


def fake_cpu_caches(root, caches):
    """A sysfs-like `cpu0/cache` folder: one `indexN` per (level, type, size, shared_cpu_list)."""
    for n, (level, kind, size, shared) in enumerate(caches):
        index = root / f"index{n}"
        index.mkdir()
        for name, value in {"level": level, "type": kind, "size": size, "shared_cpu_list": shared}.items():
            (index / name).write_text(f"{value}\n")
    return root


@pytest.mark.parametrize(
    ("caches", "workers", "expected"),
    [
        # A quarter of each worker's share of a 32 MiB L3 that 4 CPUs share.
        ([(1, "Data", "32K", "0"), (1, "Instruction", "32K", "0"), (2, "Unified", "1024K", "0"),
          (3, "Unified", "32768K", "0-3")], 2, 4 * 2**20),
        ([(2, "Unified", "1024K", "0"), (3, "Unified", "32M", "0-1,2-3")], 8, 2 * 2**20),
        # Only a 512 KiB L2: the lower bound; a huge L3 for one worker: the upper bound.
        ([(1, "Data", "32K", "0"), (2, "Unified", "512K", "0")], 2, 1 * 2**20),
        ([(3, "Unified", "256M", "0-63")], 1, 16 * 2**20),
        # Nothing reported: the default.
        ([], 2, 4 * 2**20),
    ],
)
def test_cpu_chunk_is_sized_from_the_last_level_cache(tmp_path, monkeypatch, caches, workers, expected):
    monkeypatch.setattr(metrics, "_CPU_CACHE", fake_cpu_caches(tmp_path, caches))
    metrics._cpu_chunk_bytes.cache_clear()
    try:
        assert metrics._cpu_chunk_bytes(workers) == expected
    finally:
        metrics._cpu_chunk_bytes.cache_clear()


def test_chunks_on_worker_threads_score_inside_inference_mode(monkeypatch):
    """The evaluator scores under torch.inference_mode, which is per thread: workers writing the
    caller's result tensors failed with "Inplace update to inference tensor outside InferenceMode"
    once a split had more than one chunk (a 200-person val split did)."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # two workers on any machine
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(40, 30, generator=g)
    qids, gids = torch.arange(40) % 10, torch.arange(30) % 10
    expected = retrieval_metrics(sim, qids, gids, memory_budget_mb=1e-4)
    with torch.inference_mode():
        assert retrieval_metrics(sim, qids, gids, memory_budget_mb=1e-4) == expected
