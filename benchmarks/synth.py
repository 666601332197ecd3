"""SynthPEDES generation speed: identities per second (`partsearch.data.synth.generate`).

Generates `--ids` identities (images, captions, JPEG encoding and the annotation file, written to a
temporary directory) `--repeats` times and quotes the median; the target from the issue is 1,000
identities in under a minute on 2 cores, checked by `--extrapolate` from the measured rate and,
with `--full`, measured directly.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import base_parser, log, positive, report, set_threads, wall_and_cpu


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def run_once(num_ids: int, size: tuple[int, int], seed: int) -> dict:
    from partsearch.data.synth import generate

    work = Path(tempfile.mkdtemp(prefix="partsearch-synth-bench-"))
    try:
        out = generate(work / "synth", num_ids=num_ids, seed=seed, size=size)
        records = json.loads((out / "reid_raw.json").read_text())
        return {"images": len(records), "captions": sum(len(r["captions"]) for r in records)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("synth", "SynthPEDES generation, identities per second")
    parser.add_argument("--ids", type=positive, default=200)
    parser.add_argument("--size", type=parse_size, default=(128, 64), help="HxW (default 128x64)")
    parser.add_argument("--full", type=positive, default=None, metavar="N",
                        help="also time N identities once (e.g. 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    counts = run_once(args.ids, args.size, args.seed)
    times, cpu = wall_and_cpu(lambda: run_once(args.ids, args.size, args.seed), args.repeats, warmup=0)
    seconds = statistics.median(times)
    rate = args.ids / seconds
    # generate() works in one process, so its share of one core says how much the machine slowed it
    share = 100 * statistics.median(c / w for c, w in zip(cpu, times))
    size = "x".join(map(str, args.size))
    rows = [{"ids": args.ids, "size": size, "images": counts["images"], "captions": counts["captions"],
             "seconds": seconds, "ids_s": rate, "measured": f"median of {args.repeats}",
             "min_s": min(times), "max_s": max(times), "cpu_share_pct": share,
             "ids_s_per_cpu_s": args.ids / statistics.median(cpu)},
            {"ids": 1000, "size": size, "seconds": 1000 / rate, "ids_s": rate,
             "measured": f"extrapolated from {args.ids}"}]
    if args.full:
        start, start_cpu = time.perf_counter(), time.process_time()
        full = run_once(args.full, args.size, args.seed)
        elapsed = time.perf_counter() - start
        full_cpu = time.process_time() - start_cpu
        log(f"{args.full} ids in {elapsed:.1f}s")
        rows.append({"ids": args.full, "size": size, "images": full["images"], "captions": full["captions"],
                     "seconds": elapsed, "ids_s": args.full / elapsed, "measured": "once",
                     "cpu_share_pct": 100 * full_cpu / elapsed, "ids_s_per_cpu_s": args.full / full_cpu})
    notes = ["target: 1,000 ids in under 60 s on 2 cores",
             "generate() runs in one process: cpu_share_pct is its share of one core (100 = not slowed by "
             "other load); ids_s_per_cpu_s is the rate per CPU-second, what an idle core would give"]
    report("synth", rows, args, notes, columns=["ids", "size", "images", "captions", "seconds", "ids_s",
                                                "measured", "min_s", "max_s", "cpu_share_pct", "ids_s_per_cpu_s"])
    return 0
