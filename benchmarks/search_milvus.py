"""Milvus rows of the search benchmark (`python -m benchmarks search --milvus`): a milvus-lite
server started here, filled through `search.milvus.MilvusIndex` (the code `Searcher` runs with a
Milvus backend), the index the server reports read back (`MilvusIndex.describe`), then latency and
recall@10 of `MilvusIndex.search` (first stage on the global vectors, exact folded re-rank) for a
sweep of the first stage's search parameter. Recall that does not move with ef (HNSW) while it
moves with nprobe (IVF) means the server searched exhaustively whatever index it reports.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import log

K = 10


def start_server(data_dir: Path) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("milvus-lite") or str(Path(sys.executable).with_name("milvus-lite"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shutil.rmtree(data_dir, ignore_errors=True)
    proc = subprocess.Popen([exe, "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"milvus-lite server did not start (exit {proc.poll()})")
        time.sleep(0.2)


def bench_milvus(size: int, folded: np.ndarray, data: dict, workdir: Path, args) -> list[dict]:
    from benchmarks.search import _row, recall_at, time_queries
    from partsearch.search.milvus import MilvusIndex

    dim = data["dim"]
    count = min(args.milvus_queries, len(data["query_folded"]))
    rows = []
    configs = [("HNSW", {"M": 16, "efConstruction": 200}, "ef", args.milvus_ef),
               ("IVF_SQ8", {"nlist": 1024}, "nprobe", args.milvus_nprobe)]
    proc, uri = start_server(workdir / "milvus")
    try:
        for index_type, build_params, knob, values in configs:
            index = MilvusIndex(uri, collection=f"bench_{index_type.lower()}", index_type=index_type,
                                index_params=build_params, timeout=600)
            if index.client.has_collection(index.collection):
                index.drop()
            t0 = time.perf_counter()
            for start in range(0, size, 10_000):
                block = np.asarray(folded[start:start + 10_000], np.float32)
                index.add(np.arange(start, start + len(block)), block, block[:, :dim])
            index.client.flush(index.collection)
            build_s = time.perf_counter() - t0
            described = index.describe()
            log(f"G={size:,}: Milvus {index_type} filled in {build_s:.0f}s; server reports {described}")
            for value in values:
                index.search_params = {knob: value}
                p50, p95, found = time_queries(
                    lambda i: index.search(data["query_folded"][i:i + 1], data["query_global"][i:i + 1], K)[1], count)
                reported = ", ".join(f"{k} {described.get(k)}" for k in ("index_type", "indexed_rows", "state"))
                rows.append(_row(size, args.data, f"Milvus-lite {index_type} (global) + exact re-rank",
                                 f"requested {build_params}, {knob} {value}, {index.rerank_factor} x k candidates; "
                                 f"server reports {reported}", build_s, p50, p95,
                                 recall_at(found, data["exact"][:count], K), None, count))
                log(f"G={size:,}: Milvus {index_type} {knob} {value}: p50 {p50:.1f} ms, recall {rows[-1]['recall@10']:.3f}")
            index.drop()
    except Exception as err:  # Milvus is optional: report why it did not run, keep the FAISS figures
        log(f"Milvus failed at G={size:,}: {type(err).__name__}: {err}")
        rows.append(_row(size, args.data, "Milvus-lite", f"failed: {type(err).__name__}: {err}"[:200],
                         None, None, None, None, None, 0))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(workdir / "milvus", ignore_errors=True)
    return rows
