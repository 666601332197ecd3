"""Search latency, recall and memory at 10k / 100k / 1M gallery images, per vector backend.

Every row times the code `partsearch search` runs: `search.vectors.FaissIndex` (built with
`FaissIndex.build` as `partsearch index` builds it, then loaded from its file as a server loads
it), and `search.milvus.MilvusIndex` for Milvus. Per gallery size G and backend:

- build s: building the vector index from the stored folded vectors (embedding excluded);
- p50 / p95 ms: one query at a time (batch of one), `--search-threads` threads;
- recall@10: overlap of the returned top 10 with the exact float32 ranking of the folded vectors;
- RSS: peak resident memory of a fresh process that loads the index (the folded vectors
  memory-mapped, float16, as the store keeps them) and answers the queries; python, numpy, faiss
  and torch are imported, the model is not loaded.

Data (`--data`):
- `calibrated` (the realistic case): real SynthPEDES image embeddings of a trained run, extended
  to G with the generator of `benchmarks/gallery_vectors.py` (identity centroids and
  within-identity residuals drawn from the measured ones); queries are the real test captions'
  embeddings. Make the vectors first with `python -m benchmarks gallery-vectors`.
- `random` (the worst case): random unit vectors with no identity structure. The 13 blocks of an
  image's folded vector (global, 6 coarse, 6 fine) describe the same person, so each block is
  normalise(z + sigma e_b) around one per-image latent z (sigma = 1: cosine about 0.5 between the
  blocks of one image); a query is built the same way around a perturbed copy of a random gallery
  image's latent (cosine about 0.7), so it has one true match and its other nine nearest
  neighbours are random vectors, which no index can tell apart from the next thousand without
  scanning.

The ground truth is computed in float32 while the gallery is generated; the index serves the
float16 copy (section 6 of docs/BENCHMARKS.md has the effect of float16 on scores).

`--filter-keep 0.01,0.1` times filtered search instead (`FaissIndex.search(..., rows=...)`, what
`Searcher.query(..., filters=...)` runs after turning a filter into each segment's allowed rows):
the `auto` index is built as shipped, a random `keep` share of the rows is allowed, and recall@10
is against the exact float32 ranking of the allowed rows alone; the filter's own mask is timed
apart (`filters.Filters.mask` over G video records, one camera of 100).
"""

from __future__ import annotations

import json
import multiprocessing
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
K = 10


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


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


class TopK:
    """The exact float32 top-k of Q queries, merged over gallery chunks as they are generated."""

    def __init__(self, queries: np.ndarray, k: int = K):
        self.queries = torch.from_numpy(np.ascontiguousarray(queries, np.float32))
        self.k = k
        self.scores = torch.full((len(queries), k), -float("inf"))
        self.rows = torch.zeros((len(queries), k), dtype=torch.long)

    def add(self, chunk: np.ndarray, start: int) -> None:
        s = self.queries @ torch.from_numpy(np.ascontiguousarray(chunk, np.float32)).T
        s, i = torch.topk(s, min(self.k, s.shape[1]), dim=1)
        merged_s, merged_i = torch.cat([self.scores, s], 1), torch.cat([self.rows, i + start], 1)
        top = torch.topk(merged_s, self.k, dim=1).indices
        self.scores, self.rows = merged_s.gather(1, top), merged_i.gather(1, top)


def random_gallery(size: int, dim: int, queries: int, path: Path, seed: int = 0, sigma: float = 1.0,
                   query_noise: float = 1.0, chunk: int = 50_000) -> dict:
    """The worst case (module docstring): float16 folded vectors written to `path`, float32 queries
    and their exact top-k."""
    levels = 1 + NUM_COARSE + NUM_FINE
    gen = torch.Generator().manual_seed(seed)

    def unit(x):
        return torch.nn.functional.normalize(x, dim=-1)

    latent = unit(torch.randn(size, dim, generator=gen))
    targets = torch.randint(0, size, (queries,), generator=gen)
    q_latent = unit(latent[targets] + query_noise * torch.randn(queries, dim, generator=gen) / dim**0.5)
    q_blocks = unit(q_latent[:, None, :] + sigma * torch.randn(queries, levels, dim, generator=gen) / dim**0.5)
    # The query side of the folded inner product: [w_g g; (w_c/N_c) C; (w_f/P) F], w = (1, 1, 1).
    weights = torch.tensor([1.0] + [1.0 / NUM_COARSE] * NUM_COARSE + [1.0 / NUM_FINE] * NUM_FINE)
    query_folded = (q_blocks * weights[:, None]).reshape(queries, -1).contiguous().numpy()
    folded = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(size, levels * dim))
    truth = TopK(query_folded)
    for start in range(0, size, chunk):
        stop = min(start + chunk, size)
        blocks = unit(latent[start:stop, None, :] + sigma * torch.randn(stop - start, levels, dim, generator=gen) / dim**0.5)
        flat = blocks.reshape(stop - start, -1).numpy()
        truth.add(flat, start)
        folded[start:stop] = flat.astype(np.float16)
    folded.flush()
    return {"query_folded": query_folded, "query_global": q_blocks[:, 0].contiguous().numpy(),
            "exact": truth.rows.numpy(), "dim": dim}


def calibrated_gallery(vectors: Path, size: int, queries: int, path: Path, seed: int = 0,
                       chunk: int = 50_000) -> dict:
    """The realistic case (module docstring): measured image vectors extended to `size` by the
    calibrated generator, written float16 to `path`; the real captions as queries."""
    from benchmarks.gallery_vectors import Calibration

    meta = json.loads((vectors / "meta.json").read_text())
    measured = np.load(vectors / "folded.f16.npy", mmap_mode="r")
    identity = np.load(vectors / "identity.npy")
    query_folded = np.load(vectors / "query_folded.npy")[:queries]
    truth = TopK(query_folded)
    folded = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(size, measured.shape[1]))
    take = min(size, len(measured))
    for start in range(0, take, chunk):
        block = np.asarray(measured[start:min(start + chunk, take)], np.float32)
        truth.add(block, start)
        folded[start:start + len(block)] = block.astype(np.float16)
    if size > take:
        calibration = Calibration(measured, identity, meta["dim"])
        rng = np.random.default_rng(seed)
        for start in range(take, size, chunk):
            block, _ = calibration.new_images(rng, min(chunk, size - start))
            truth.add(block, start)
            folded[start:start + len(block)] = block.astype(np.float16)
    folded.flush()
    return {"query_folded": query_folded, "query_global": np.load(vectors / "query_global.npy")[:queries],
            "exact": truth.rows.numpy(), "dim": meta["dim"]}


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


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), file-backed pages of memory maps included."""
    return _status_mib("VmHWM")


def anon_rss_mib() -> float:
    """This process's resident anonymous memory now (RssAnon): what it allocated, without the
    page-cache pages of the memory-mapped vectors that RSS also counts."""
    return _status_mib("RssAnon")


def _serve(job: dict, conn) -> None:
    """In a fresh process: load the index as a server does, answer the queries one at a time for
    every setting, send back one result per setting."""
    import faiss

    from partsearch.search.vectors import FaissIndex

    set_threads(job["threads"])
    folded = np.load(job["folded"], mmap_mode="r")
    ids = np.arange(len(folded), dtype=np.int64)
    index = FaissIndex.load(Path(job["index"]), folded, ids, job["factory"])
    queries, exact = np.load(job["queries"]), np.load(job["exact"])
    count = min(len(queries), job["count"])
    results = []
    ivf = faiss.try_extract_index_ivf(index.index) if index.index is not None else None
    settings = job["settings"] if not index.exact else [(0, 0)]
    for nprobe, factor in settings:
        nprobe = nprobe if ivf is not None else 0
        factor = factor if not index.exact else 0
        if nprobe:
            ivf.nprobe = nprobe
        if factor:
            index.rerank_factor = factor
        p50, p95, found = time_queries(lambda i: index.search(queries[i:i + 1], None, K)[1], count)
        results.append({"nprobe": nprobe, "factor": factor, "p50": p50, "p95": p95,
                        "recall": recall_at(found, exact[:count], K), "queries": count})
    conn.send({"results": results, "rss_mib": peak_rss_mib(), "anon_mib": anon_rss_mib(), "built": index.describe()})
    conn.close()


def serve(job: dict) -> dict:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_serve, args=(job, child))
    proc.start()
    child.close()
    result = parent.recv()
    proc.join()
    return result


def _row(size, data, backend, params, build_s, p50, p95, recall, rss, queries, anon=None):
    return {"gallery": size, "data": data, "backend": backend, "params": params, "build_s": build_s,
            "p50_ms": p50, "p95_ms": p95, "recall@10": recall, "rss_mib": rss, "anon_mib": anon, "queries": queries}


def bench_size(size: int, args, workdir: Path) -> list[dict]:
    from partsearch.search.vectors import FaissIndex

    t0 = time.perf_counter()
    folded_path = workdir / f"folded_{args.data}_{size}.npy"
    if args.data == "random":
        data = random_gallery(size, args.dim, args.queries, folded_path, seed=args.seed)
    else:
        data = calibrated_gallery(Path(args.vectors), size, args.queries, folded_path, seed=args.seed)
    np.save(workdir / "queries.npy", data["query_folded"])
    np.save(workdir / "exact.npy", data["exact"])
    folded = np.load(folded_path, mmap_mode="r")
    log(f"G={size:,} ({args.data}): gallery D={folded.shape[1]} + exact float32 top-{K} in {time.perf_counter() - t0:.0f}s")
    rows = []
    job = {"folded": str(folded_path), "queries": str(workdir / "queries.npy"), "exact": str(workdir / "exact.npy"),
           "threads": args.search_threads}

    backends = [("Flat", "exact", [(0, 0)], args.exact_queries)] if size <= args.exact_max else []
    backends.append(("auto", "auto", [(p, f) for p in args.nprobe for f in args.factor], args.queries))
    backends += [(factory, factory, [(0, f) for f in args.factor], args.queries) for factory in args.factory]
    for factory, label, settings, count in backends:
        set_threads(args.threads)
        index_path = workdir / f"vectors_{size}.faiss"
        t0 = time.perf_counter()
        index = FaissIndex.build(folded, np.arange(size, dtype=np.int64), factory)
        build_s = time.perf_counter() - t0
        index.save(index_path)
        built = index.factory
        del index
        log(f"G={size:,}: {label} ({built}) built in {build_s:.1f}s")
        served = serve(dict(job, index=str(index_path), factory=factory, settings=settings, count=count))
        for r in served["results"]:
            params = built + (f", nprobe {r['nprobe']}" if r["nprobe"] else "") + (
                f", {r['factor']} x k candidates" if r["factor"] else "")
            rows.append(_row(size, args.data, label, params, build_s, r["p50"], r["p95"], r["recall"],
                             served["rss_mib"], r["queries"], served["anon_mib"]))
            log(f"G={size:,}: {params}: p50 {r['p50']:.2f} ms, recall@10 {r['recall']:.3f}, "
                f"RSS {served['rss_mib']:.0f} MiB (anonymous {served['anon_mib']:.0f} MiB)")
        index_path.unlink(missing_ok=True)

    if args.milvus and size <= args.milvus_max:
        from benchmarks.search_milvus import bench_milvus

        rows += bench_milvus(size, folded, data, workdir, args)
    del folded
    folded_path.unlink(missing_ok=True)
    return rows


def bench_filtered(size: int, args, workdir: Path) -> list[dict]:
    """Filtered search at G = `size` (module docstring): one row per share in `--filter-keep`."""
    from partsearch.search.vectors import FaissIndex

    folded_path = workdir / f"folded_{args.data}_{size}.npy"
    if args.data == "random":
        data = random_gallery(size, args.dim, args.queries, folded_path, seed=args.seed)
    else:
        data = calibrated_gallery(Path(args.vectors), size, args.queries, folded_path, seed=args.seed)
    folded = np.load(folded_path, mmap_mode="r")
    queries = data["query_folded"]
    t0 = time.perf_counter()
    index = FaissIndex.build(folded, np.arange(size, dtype=np.int64), "auto")
    build_s = time.perf_counter() - t0
    log(f"G={size:,}: auto ({index.factory}) built in {build_s:.1f}s")
    mask_ms = filter_mask_ms(size)
    rows_out = []
    rng = np.random.default_rng(args.seed)
    for keep in args.filter_keep:
        allowed = np.sort(rng.choice(size, max(1, round(keep * size)), replace=False))
        best_scores = np.full((len(queries), 0), -np.inf, np.float32)
        best_ids = np.zeros((len(queries), 0), np.int64)
        for start in range(0, len(allowed), 65_536):  # float32 ground truth over the allowed rows alone
            block = allowed[start:start + 65_536]
            scores = np.concatenate([best_scores, queries @ np.asarray(folded[block], np.float32).T], axis=1)
            ids = np.concatenate([best_ids, np.broadcast_to(block, (len(queries), len(block)))], axis=1)
            top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
            best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
        exact = best_ids
        p50, p95, found = time_queries(lambda i: index.search(queries[i:i + 1], None, K, rows=allowed)[1],
                                       args.queries)
        recall = recall_at(found, exact, K)
        path = "exact over the allowed rows" if len(allowed) <= _exact_max() else "IDSelectorBitmap, nprobe scaled + exact re-rank"
        rows_out.append({"gallery": size, "data": args.data, "keep": keep, "allowed": len(allowed),
                         "path": f"{index.factory}: {path}", "build_s": build_s, "p50_ms": p50, "p95_ms": p95,
                         "recall@10": recall, "mask_ms": mask_ms, "queries": args.queries})
        log(f"G={size:,} keep {keep:g}: p50 {p50:.2f} ms, p95 {p95:.2f} ms, recall@10 {recall:.4f} ({path})")
    del index, folded
    folded_path.unlink(missing_ok=True)
    return rows_out


def _exact_max() -> int:
    from partsearch.search.vectors import FILTER_EXACT_MAX

    return FILTER_EXACT_MAX


def filter_mask_ms(size: int, cameras: int = 100) -> float:
    """Median ms of `Filters(cameras=...).mask` over `size` video records on `cameras` cameras (the
    columns are built once per generation and not timed)."""
    from types import SimpleNamespace

    from partsearch.search.filters import Filters, columns
    from partsearch.search.tracks import VideoRecord

    records = [VideoRecord(f"v{i % cameras}.mp4", i, i / 10, (0, 0, 1, 1), i % 7, f"cam{i % cameras}")
               for i in range(size)]
    gen = SimpleNamespace(entries=[SimpleNamespace(video=r) for r in records])
    columns(gen)
    wanted = Filters(cameras=("cam7",))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        wanted.mask(gen)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("search", "query latency p50/p95, recall@10 and RSS per vector backend")
    parser.add_argument("--data", choices=["calibrated", "random"], default="calibrated")
    parser.add_argument("--vectors", default=None, help="for --data calibrated: the output of `python -m "
                        "benchmarks gallery-vectors`")
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("10k,100k,1m"),
                        help="gallery sizes (default 10k,100k,1m)")
    parser.add_argument("--dim", type=positive, default=128, help="--data random: global width d (default 128, synth_cpu)")
    parser.add_argument("--queries", type=positive, default=200)
    parser.add_argument("--exact-queries", type=positive, default=50, help="queries timed on the exact backend")
    parser.add_argument("--exact-max", type=positive, default=100_000,
                        help="largest G timed on the exact backend (it scans every vector per query)")
    parser.add_argument("--nprobe", type=int_list, default=[16, 32, 64], help="auto: lists probed (sweep)")
    parser.add_argument("--factor", type=int_list, default=[10, 20], help="candidates per result re-ranked (sweep)")
    parser.add_argument("--factory", action="append", default=[],
                        help="also time this FAISS factory string as a first stage (repeatable)")
    parser.add_argument("--milvus", action="store_true", help="also time Milvus (milvus-lite server)")
    parser.add_argument("--milvus-max", type=positive, default=100_000)
    parser.add_argument("--milvus-queries", type=positive, default=100)
    parser.add_argument("--milvus-ef", type=int_list, default=[100, 400])
    parser.add_argument("--milvus-nprobe", type=int_list, default=[8, 64])
    parser.add_argument("--search-threads", type=positive, default=1,
                        help="threads while timing queries (default 1: a server spends its cores on "
                             "concurrent queries)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the large memmaps go (default: a temp dir)")
    parser.add_argument("--filter-keep", type=lambda s: [float(x) for x in s.split(",")], default=None,
                        help="time filtered search instead, allowing these shares of the rows (e.g. 0.01,0.1)")
    args = parser.parse_args(argv)
    if args.data == "calibrated" and not (args.vectors and (Path(args.vectors) / "meta.json").is_file()):
        parser.error("--data calibrated needs --vectors DIR written by `python -m benchmarks gallery-vectors`")
    set_threads(args.threads)
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="partsearch-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.filter_keep:
        try:
            for size in args.sizes:
                rows += bench_filtered(size, args, base)
        finally:
            if not args.workdir:
                shutil.rmtree(base, ignore_errors=True)
        report("search (filtered)", rows, args, [
            f"data: {args.data}; recall@10 against the exact float32 ranking of the allowed rows; latency per "
            f"single query; mask_ms: Filters.mask over G video records (one camera of 100)"],
            columns=["gallery", "data", "keep", "allowed", "path", "build_s", "p50_ms", "p95_ms", "recall@10",
                     "mask_ms", "queries"])
        return 0
    try:
        for size in args.sizes:
            rows += bench_size(size, args, base)
            if args.json and size != args.sizes[-1]:
                write_json(args.json, {"benchmark": "search", "partial": True, "machine": machine_info(), "rows": rows})
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
    notes = [
        f"data: {args.data} (benchmarks/search.py docstring); recall@10 against the exact float32 folded ranking",
        f"latency per single query, p50/p95; threads: {args.threads} to build, {args.search_threads} per query",
        "rss_mib: peak RSS of a fresh process loading the index (folded vectors memory-mapped, float16) and "
        "answering the queries; the model is not loaded; it counts the pages of the memory-mapped vectors "
        "the queries touched (page cache); anon_mib: the process's anonymous memory (RssAnon) at the end",
    ]
    report("search", rows, args, notes,
           columns=["gallery", "data", "backend", "params", "build_s", "p50_ms", "p95_ms", "recall@10", "rss_mib", "anon_mib", "queries"])
    return 0
