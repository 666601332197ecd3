"""The HTTP service under load: `--clients` concurrent clients search for `--seconds` while one
writer uploads and deletes images, then the answers are checked for consistency.

    python -m benchmarks service-load --run RUN_DIR --images DIR --uploads DIR --captions reid_raw.json

builds an index of `--images` with `partsearch index`'s code (`build_index`), starts `partsearch
serve`'s app (`service.create_app`, uvicorn) on a free loopback port in this process, and runs
`run_load` against it over real HTTP (one `httpx.Client` per client thread). Reported: searches
answered, errors (any status but 200, any exception), search latency p50/p95 as the clients saw it,
uploads and deletes done and their p50, and the consistency check (`check_consistency`): the image
count the server reports is the built gallery plus uploads minus deletes, no search returns an
image deleted or unknown, and every query answers exactly what a fresh `Searcher` over the index
directory answers.

The clients run in this process beside the server, on the same cores, so latency includes their
own cost; the figures are for this machine under its load (recorded with them).
"""

from __future__ import annotations

import io
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import base_parser, log, positive, report

KEY = "benchmark-key"


@dataclass
class LoadResult:
    searches: int = 0
    search_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    uploads: int = 0
    deletes: int = 0
    write_ms: list[float] = field(default_factory=list)
    uploaded: set[int] = field(default_factory=set)  # uploaded ids still in the index
    deleted: set[int] = field(default_factory=set)

    def summary(self) -> dict:
        ms = sorted(self.search_ms)
        pick = (lambda q: ms[min(len(ms) - 1, int(round(q * (len(ms) - 1))))]) if ms else (lambda q: None)
        return {"searches": self.searches, "errors": len(self.errors), "p50_ms": pick(0.5), "p95_ms": pick(0.95),
                "uploads": self.uploads, "deletes": self.deletes,
                "write_p50_ms": statistics.median(self.write_ms) if self.write_ms else None}


def run_load(base_url: str, queries: list[str], seconds: float, clients: int, make_upload,
             api_key: str = KEY, write_pause: float = 0.2, seed: int = 0) -> LoadResult:
    """`clients` threads search `queries` (random order) until `seconds` have passed, while one
    writer uploads `make_upload(i)` (bytes of a new image) and deletes one of its uploads after
    every second upload. The clock starts when every thread is ready; each client searches at
    least once and the writer does at least two uploads and a delete, however slow the machine.
    Never raises for a failed request: failures are collected in `errors`."""
    import httpx

    result = LoadResult()
    lock = threading.Lock()
    deadline = [0.0]
    ready = threading.Barrier(clients + 1, action=lambda: deadline.__setitem__(0, time.monotonic() + seconds))

    def searcher(number: int) -> None:
        rng = random.Random(seed + number)
        with httpx.Client(base_url=base_url, timeout=120) as http:
            ready.wait()
            first = True
            while first or time.monotonic() < deadline[0]:
                first = False
                query = rng.choice(queries)
                start = time.perf_counter()
                try:
                    response = http.post("/api/search", json={"query": query, "top_k": 10})
                    problem = None if response.status_code == 200 else f"search {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as err:
                    problem = f"search {type(err).__name__}: {err}"
                elapsed = (time.perf_counter() - start) * 1000.0
                with lock:
                    result.searches += 1
                    result.search_ms.append(elapsed)
                    if problem:
                        result.errors.append(problem)

    def writer() -> None:
        rng = random.Random(seed)
        headers = {"X-API-Key": api_key}
        with httpx.Client(base_url=base_url, timeout=120) as http:
            number = 0
            ready.wait()
            while number < 3 or time.monotonic() < deadline[0]:
                start = time.perf_counter()
                try:
                    if number % 3 == 2 and result.uploaded:
                        victim = rng.choice(sorted(result.uploaded))
                        response = http.delete(f"/api/images/{victim}", headers=headers)
                        if response.status_code == 200:
                            result.uploaded.discard(victim)
                            result.deleted.add(victim)
                            result.deletes += 1
                        else:
                            result.errors.append(f"delete {response.status_code}: {response.text[:200]}")
                    else:
                        files = {"file": (f"upload{number}.png", make_upload(number), "application/octet-stream")}
                        response = http.post("/api/images", files=files, headers=headers)
                        if response.status_code == 201:
                            result.uploaded.add(int(response.json()["id"]))
                            result.uploads += 1
                        else:
                            result.errors.append(f"upload {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as err:
                    result.errors.append(f"write {type(err).__name__}: {err}")
                result.write_ms.append((time.perf_counter() - start) * 1000.0)
                number += 1
                time.sleep(write_pause)

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(clients)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def check_consistency(base_url: str, queries: list[str], result: LoadResult, built: int, fresh_searcher) -> list[str]:
    """What is wrong after a load run (empty when all is well): the server's image count against
    `built + uploads - deletes`; searches returning a deleted image; and, per query, the server's
    ids and scores against `fresh_searcher` (a new `Searcher` over the same index directory)."""
    import httpx

    problems = []
    with httpx.Client(base_url=base_url, timeout=120) as http:
        images = http.get("/healthz").json()["images"]
        expected = built + result.uploads - result.deletes
        if images != expected:
            problems.append(f"server reports {images} images, expected {built} + {result.uploads} uploads "
                            f"- {result.deletes} deletes = {expected}")
        for query in queries:
            body = http.post("/api/search", json={"query": query, "top_k": 10}).json()
            ids = [r["id"] for r in body["results"]]
            if set(ids) & result.deleted:
                problems.append(f"{query!r} returned deleted images {sorted(set(ids) & result.deleted)}")
            fresh = fresh_searcher.search(query, 10)
            if ids != [r.id for r in fresh] or any(abs(r["score"] - f.score) > 1e-5 for r, f in zip(body["results"], fresh)):
                problems.append(f"{query!r}: server answered {ids}, a fresh Searcher {[r.id for r in fresh]}")
    return problems


class ServerThread:
    """`service.create_app(searcher)` served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, searcher, api_key: str = KEY):
        import uvicorn

        from partsearch.search.service import create_app
        from partsearch.search.service_access import listen

        self.socket = listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(create_app(searcher, api_key=api_key), log_level="warning", timeout_keep_alive=120)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.socket.close()


def main(argv: list[str] | None = None) -> int:
    import json

    parser = base_parser("service-load", "concurrent searches against the HTTP service while uploads and deletes happen")
    parser.add_argument("--run", required=True, help="a trained run directory")
    parser.add_argument("--images", required=True, help="the gallery to index")
    parser.add_argument("--uploads", required=True, help="a folder of other images to upload during the run")
    parser.add_argument("--captions", required=True, help="a reid_raw.json whose captions are the queries")
    parser.add_argument("--index", required=True, help="index directory (created; reused if it exists)")
    parser.add_argument("--clients", type=positive, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--queries", type=positive, default=100)
    args = parser.parse_args(argv)
    import torch

    from partsearch.search.encoder import RunEncoder
    from partsearch.search.index import build_index, scan_images
    from partsearch.search.searcher import Searcher

    torch.set_num_threads(max(1, args.threads))
    encoder = RunEncoder(args.run, "best", device="cpu")
    report_ = build_index(encoder, args.images, args.index, progress=False)
    log(report_.summary())
    records = json.loads(Path(args.captions).read_text())
    queries = [c for r in records for c in r["captions"]][: args.queries]
    upload_paths = [Path(args.uploads) / p for p in scan_images(Path(args.uploads))]

    def make_upload(i: int) -> bytes:
        from PIL import Image

        image = Image.open(upload_paths[i % len(upload_paths)]).convert("RGB")
        image.putpixel((0, 0), (i % 256, (i // 256) % 256, 7))  # distinct bytes for every upload
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    searcher = Searcher(args.index, encoder=encoder)
    with ServerThread(searcher) as server:
        log(f"{args.clients} clients searching {server.url} for {args.seconds:.0f} s, with uploads and deletes")
        result = run_load(server.url, queries, args.seconds, args.clients, make_upload)
        problems = check_consistency(server.url, queries[:20], result, report_.total,
                                     Searcher(args.index, encoder=encoder))
    row = dict(result.summary(), clients=args.clients, seconds=args.seconds, gallery=report_.total,
               searches_s=result.searches / args.seconds, consistent=not problems)
    for problem in (result.errors[:5] + problems[:5]):
        log(problem)
    report("service-load", [row], args, [
        "latency as 50 client threads in the same process saw it (clients and server share the cores)",
        "consistent: image count = gallery + uploads - deletes, no deleted image returned, answers equal a fresh Searcher's",
    ], extra={"errors": result.errors[:20], "problems": problems[:20]})
    return 0 if not result.errors and not problems else 1
