"""Search latency and recall at 10k / 100k / 1M gallery vectors (FAISS, and Milvus when it runs).

What is measured, per gallery size G:
- global space (d = 256, the model's global vectors): exact `IndexFlatIP`, HNSW (efSearch sweep)
  and IVF-PQ with exact re-ranking of its shortlist (`IndexRefineFlat`); recall@10 against the
  exact search in the same space;
- folded space (D = d (1 + N_c + P) = 3328, the vector whose inner product IS the model's
  similarity, METHOD.md "Similarity"): exact flat search where it fits in memory, and the
  two-stage scheme [ours] - HNSW on the global vectors returns C candidates, which are re-ranked
  exactly on their folded vectors - with recall@10 against exact folded search;
- Milvus (milvus-lite, HNSW) on the global vectors, up to `--milvus-max` vectors (insertion is slow).

Latency is per single query (batch of one), p50/p95 over `--queries` queries.

Data [ours]: gallery vectors are random unit vectors, so nothing about real embeddings is
assumed except this: the 13 blocks of an image's folded vector (global, 6 coarse, 6 fine) describe
the same person, so each block is normalise(z + sigma e_b) around one per-image latent z (sigma = 1
gives cosine about 0.5 between blocks of one image). A query is built the same way around a
perturbed copy of a random gallery image's latent (cosine about 0.7), so each query has a true
match; its other nine nearest neighbours are random vectors, which is the hard case for ANN.
The folded vectors are stored as float16 (a memory-mapped file for large G): "exact" means exact
over the stored vectors.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import base_parser, log, machine_info, positive, report, set_threads, write_json

NUM_COARSE = 6
NUM_FINE = 6


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        mult = 1
        if part.endswith("k"):
            part, mult = part[:-1], 1000
        elif part.endswith("m"):
            part, mult = part[:-1], 1_000_000
        sizes.append(int(float(part) * mult))
    if any(s <= 0 for s in sizes):
        raise ValueError(f"gallery sizes must be positive: {text}")
    return sizes


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


class SyntheticGallery:
    """Global vectors (G, d) float32 in memory and folded vectors (G, L*d) float16 (memmap when big),
    plus Q queries in both spaces with the exact folded top-k computed while the gallery is written."""

    def __init__(self, size: int, dim: int, queries: int, workdir: Path, seed: int = 0,
                 sigma: float = 1.0, query_noise: float = 1.0, k: int = 10, chunk: int = 50_000):
        self.levels = 1 + NUM_COARSE + NUM_FINE
        gen = torch.Generator().manual_seed(seed)
        latent = _normalise(torch.randn(size, dim, generator=gen))
        targets = torch.randint(0, size, (queries,), generator=gen)
        q_latent = _normalise(latent[targets] + query_noise * torch.randn(queries, dim, generator=gen) / dim**0.5)
        q_blocks = _normalise(q_latent[:, None, :] + sigma * torch.randn(queries, self.levels, dim, generator=gen) / dim**0.5)
        # The query side of the folded inner product: [w_g g; (w_c/N_c) C; (w_f/P) F], w = (1, 1, 1).
        weights = torch.tensor([1.0] + [1.0 / NUM_COARSE] * NUM_COARSE + [1.0 / NUM_FINE] * NUM_FINE)
        self.query_global = q_blocks[:, 0].contiguous().numpy()
        self.query_folded = (q_blocks * weights[:, None]).reshape(queries, -1).contiguous().numpy()
        self.targets = targets.numpy()

        self.global_ = np.empty((size, dim), dtype=np.float32)
        folded_dim = self.levels * dim
        self.path = None
        if size * folded_dim * 2 > 512 * 2**20:
            self.path = workdir / f"folded_{size}.f16"
            self.folded = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float16, shape=(size, folded_dim))
        else:
            self.folded = np.empty((size, folded_dim), dtype=np.float16)
        qf = torch.from_numpy(self.query_folded)
        best_s = torch.full((queries, k), -float("inf"))
        best_i = torch.zeros((queries, k), dtype=torch.long)
        for start in range(0, size, chunk):
            stop = min(start + chunk, size)
            blocks = _normalise(latent[start:stop, None, :] + sigma * torch.randn(stop - start, self.levels, dim, generator=gen) / dim**0.5)
            flat16 = blocks.reshape(stop - start, -1).to(torch.float16)
            self.folded[start:stop] = flat16.numpy()
            self.global_[start:stop] = flat16[:, :dim].float().numpy()
            scores = qf @ flat16.float().T
            s, i = torch.topk(scores, min(k, stop - start), dim=1)
            merged_s = torch.cat([best_s, s], 1)
            merged_i = torch.cat([best_i, i + start], 1)
            top = torch.topk(merged_s, k, dim=1).indices
            best_s, best_i = merged_s.gather(1, top), merged_i.gather(1, top)
        if self.path is not None:
            self.folded.flush()
        self.exact_folded = best_i.numpy()


def recall_at(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k].tolist()) & set(e[:k].tolist())) for f, e in zip(found, exact)]
    return float(np.mean(hits)) / k


def time_queries(search_one, count: int, warmup: int = 5) -> tuple[float, float, np.ndarray]:
    """(p50 ms, p95 ms, top-k ids (Q, k)) for one query at a time; `search_one(i)` searches query i."""
    for i in range(min(warmup, count)):
        search_one(i)
    times, ids = [], []
    for i in range(count):
        start = time.perf_counter()
        found = search_one(i)
        times.append((time.perf_counter() - start) * 1000.0)
        ids.append(found[0])
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return statistics.median(times), p95, np.stack(ids)


def _row(size, space, method, params, build_s, p50, p95, recall):
    return {"gallery": size, "space": space, "method": method, "params": params, "build_s": build_s,
            "p50_ms": p50, "p95_ms": p95, "recall@10": recall}


def bench_size(size: int, args, workdir: Path) -> list[dict]:
    import faiss

    k = 10
    t0 = time.perf_counter()
    data = SyntheticGallery(size, args.dim, args.queries, workdir, seed=args.seed)
    log(f"G={size:,}: generated gallery + exact folded top-{k} in {time.perf_counter() - t0:.1f}s")
    rows = []
    g_space = f"global d={args.dim}"
    f_space = f"folded D={data.levels * args.dim}"

    set_threads(args.search_threads)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(data.global_)
    p50, p95, exact_global = time_queries(lambda i: flat.search(data.query_global[i:i + 1], k)[1], args.queries)
    rows.append(_row(size, g_space, "exact IndexFlatIP", "", 0.0, p50, p95, 1.0))
    log(f"G={size:,}: flat global p50 {p50:.2f} ms")
    del flat

    set_threads(args.threads)
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(args.dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.ef_construction
    hnsw.add(data.global_)
    hnsw_build = time.perf_counter() - t0
    set_threads(args.search_threads)
    log(f"G={size:,}: HNSW{args.hnsw_m} built in {hnsw_build:.1f}s")
    for ef in args.ef_search:
        hnsw.hnsw.efSearch = ef
        p50, p95, ids = time_queries(lambda i: hnsw.search(data.query_global[i:i + 1], k)[1], args.queries)
        rows.append(_row(size, g_space, f"HNSW{args.hnsw_m}", f"efSearch={ef}", hnsw_build, p50, p95,
                         recall_at(ids, exact_global, k)))

    if size >= args.ivf_min:
        nlist = max(16, int(4 * size ** 0.5))
        t0 = time.perf_counter()
        ivf = faiss.index_factory(args.dim, f"IVF{nlist},PQ{args.dim // 8}", faiss.METRIC_INNER_PRODUCT)
        train = data.global_[np.random.default_rng(0).choice(size, min(size, 20 * nlist), replace=False)]
        set_threads(args.threads)
        ivf.train(train)
        refine = faiss.IndexRefineFlat(ivf)
        refine.add(data.global_)
        set_threads(args.search_threads)
        ivf_build = time.perf_counter() - t0
        log(f"G={size:,}: IVF{nlist},PQ{args.dim // 8} built in {ivf_build:.1f}s")
        for nprobe in args.nprobe:
            params = faiss.IndexRefineSearchParameters(k_factor=args.refine_factor,
                                                       base_index_params=faiss.SearchParametersIVF(nprobe=nprobe))
            p50, p95, ids = time_queries(lambda i: refine.search(data.query_global[i:i + 1], k, params=params)[1],
                                          args.queries)
            rows.append(_row(size, g_space, f"IVF{nlist},PQ{args.dim // 8}+refine", f"nprobe={nprobe} k_factor={args.refine_factor}",
                             ivf_build, p50, p95, recall_at(ids, exact_global, k)))
        del refine, ivf

    if size <= args.folded_flat_max:
        flat_f = faiss.IndexFlatIP(data.folded.shape[1])
        flat_f.add(np.asarray(data.folded, dtype=np.float32))
        p50, p95, ids = time_queries(lambda i: flat_f.search(data.query_folded[i:i + 1], k)[1], args.queries)
        rows.append(_row(size, f_space, "exact IndexFlatIP", "", 0.0, p50, p95, recall_at(ids, data.exact_folded, k)))
        del flat_f

    hnsw.hnsw.efSearch = args.two_stage_ef
    for cands in args.candidates:
        def two_stage(i, cands=cands):
            _, ids = hnsw.search(data.query_global[i:i + 1], cands)
            ids = np.sort(ids[0][ids[0] >= 0])  # sorted ids read the memmap in file order
            scores = torch.from_numpy(data.folded[ids]).float() @ torch.from_numpy(data.query_folded[i])
            top = torch.topk(scores, min(k, len(ids))).indices.numpy()
            return ids[top][None]

        p50, p95, ids = time_queries(two_stage, args.queries)
        rows.append(_row(size, f_space, f"two-stage: HNSW{args.hnsw_m} global -> exact folded re-rank",
                         f"efSearch={args.two_stage_ef} candidates={cands}", hnsw_build, p50, p95,
                         recall_at(ids, data.exact_folded, k)))
    log(f"G={size:,}: two-stage done")
    del hnsw

    if args.milvus and size <= args.milvus_max:
        rows += bench_milvus(size, data, exact_global, workdir, args)
    if data.path is not None:
        del data.folded
        data.path.unlink(missing_ok=True)
    return rows


def bench_milvus(size: int, data: SyntheticGallery, exact_global: np.ndarray, workdir: Path, args) -> list[dict]:
    try:
        from pymilvus import MilvusClient
    except ImportError as err:
        log(f"Milvus skipped: {err}")
        return []
    k = 10
    space = f"global d={args.dim}"
    try:
        client = MilvusClient(str(workdir / f"milvus_{size}.db"))
        name = "bench"
        if client.has_collection(name):
            client.drop_collection(name)
        client.create_collection(name, dimension=args.dim, metric_type="IP", auto_id=False)
        t0 = time.perf_counter()
        batch = 5000
        for start in range(0, size, batch):
            stop = min(size, start + batch)
            client.insert(name, [{"id": i, "vector": data.global_[i].tolist()} for i in range(start, stop)])
        insert_s = time.perf_counter() - t0
        log(f"G={size:,}: Milvus insert {insert_s:.1f}s")
        client.release_collection(name)
        client.drop_index(name, "vector")
        index_params = client.prepare_index_params()
        index_params.add_index("vector", index_type="HNSW", metric_type="IP",
                               params={"M": args.hnsw_m, "efConstruction": args.ef_construction})
        method = f"Milvus-lite HNSW{args.hnsw_m}"
        try:
            client.create_index(name, index_params)
        except Exception as err:  # milvus-lite builds only some index types; fall back to its default
            log(f"Milvus HNSW unavailable ({err}); using FLAT")
            index_params = client.prepare_index_params()
            index_params.add_index("vector", index_type="FLAT", metric_type="IP")
            client.create_index(name, index_params)
            method = "Milvus-lite FLAT"
        client.load_collection(name)
        build_s = time.perf_counter() - t0
        rows = []
        for ef in args.milvus_ef:
            def search_one(i, ef=ef):
                res = client.search(name, data=[data.query_global[i].tolist()], limit=k, search_params={"params": {"ef": ef}})
                return np.array([[hit["id"] for hit in res[0]]])

            count = min(args.queries, args.milvus_queries)
            p50, p95, ids = time_queries(search_one, count)
            rows.append(_row(size, space, method, f"ef={ef}, {count} queries (insert {insert_s:.0f}s)", build_s,
                             p50, p95, recall_at(ids, exact_global[:count], k)))
        client.close()
        return rows
    except Exception as err:  # Milvus is optional: report why it did not run, keep FAISS figures
        log(f"Milvus failed at G={size:,}: {type(err).__name__}: {err}")
        return [_row(size, space, "Milvus-lite", f"failed: {type(err).__name__}", None, None, None, None)]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("search", "query latency p50/p95 and recall@10 against exact search")
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("10k,100k,1m"),
                        help="gallery sizes (default 10k,100k,1m)")
    parser.add_argument("--dim", type=positive, default=256, help="global width d (default 256, synth_cpu)")
    parser.add_argument("--queries", type=positive, default=200)
    parser.add_argument("--hnsw-m", type=positive, default=32)
    parser.add_argument("--ef-construction", type=positive, default=80)
    parser.add_argument("--ef-search", type=lambda s: [int(v) for v in s.split(",")], default=[64, 128, 256])
    parser.add_argument("--nprobe", type=lambda s: [int(v) for v in s.split(",")], default=[32, 128])
    parser.add_argument("--refine-factor", type=positive, default=16)
    parser.add_argument("--ivf-min", type=positive, default=100_000, help="smallest G for IVF-PQ")
    parser.add_argument("--candidates", type=lambda s: [int(v) for v in s.split(",")], default=[100, 400, 1000],
                        help="two-stage shortlist sizes")
    parser.add_argument("--two-stage-ef", type=positive, default=400)
    parser.add_argument("--folded-flat-max", type=positive, default=100_000,
                        help="largest G for exact flat search in the folded space (float32 copy in RAM)")
    parser.add_argument("--milvus", action="store_true", help="also time milvus-lite")
    parser.add_argument("--milvus-max", type=positive, default=100_000)
    parser.add_argument("--milvus-ef", type=lambda s: [int(v) for v in s.split(",")], default=[64, 256])
    parser.add_argument("--milvus-queries", type=positive, default=50, help="queries timed against Milvus")
    parser.add_argument("--search-threads", type=positive, default=1,
                        help="threads while timing queries (default 1: a server spends its cores on "
                             "concurrent queries, and OpenMP barriers on a busy machine inflate batch-1 latency)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where large memmaps go (default: a temp dir)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="partsearch-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in args.sizes:
            rows += bench_size(size, args, base)
            if args.json and size != args.sizes[-1]:
                write_json(args.json, {"benchmark": "search", "partial": True, "machine": machine_info(), "rows": rows})
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
    notes = [
        "latency per single query (batch 1), p50/p95 over the queries; recall@10 against exact search "
        "in the same space (folded rows: against exact folded search over the stored float16 vectors)",
        "data: random unit vectors with per-image correlated blocks; see benchmarks/search.py docstring",
        f"threads: {args.threads} to build, {args.search_threads} per query (FAISS OpenMP and torch)",
    ]
    report("search", rows, args, notes,
           columns=["gallery", "space", "method", "params", "build_s", "p50_ms", "p95_ms", "recall@10"])
    return 0
