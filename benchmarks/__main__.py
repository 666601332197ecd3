"""`python -m benchmarks <name> [options]` and `python -m benchmarks all [--json-dir DIR]`.

Each benchmark is a module with `main(argv=None) -> int`, imported only when asked for, so a
benchmark whose dependencies are missing fails alone and says why.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCHMARKS: dict[str, tuple[str, str]] = {
    "synth": ("benchmarks.synth", "SynthPEDES generation, identities per second"),
    "metrics": ("benchmarks.metrics", "retrieval metrics at CUHK-PEDES / ICFG-PEDES sizes"),
    "heads": ("benchmarks.heads", "share of forward time / FLOPs in the part-level heads"),
    "ablation": ("benchmarks.ablation", "ablation runs"),
    "train-step": ("benchmarks.train_step", "training step images/s, peak memory, MFU"),
    "explain-check": ("benchmarks.explain_check", "does the part that differs get the bar that drops most?"),
    "step-profile": ("benchmarks.step_profile", "where a CPU step of synth_cpu goes, before and after a change"),
    "encode": ("benchmarks.encode", "gallery images/s and queries/s at inference"),
    "search": ("benchmarks.search", "query latency and recall@10 at 10k / 100k / 1M vectors"),
    "image-query": ("benchmarks.image_query", "R@1 of image-to-image and text + image queries on SynthPEDES test"),
    "sightings": ("benchmarks.sightings", "precision / recall of same-person links on synthetic multi-camera video"),
    "gallery-vectors": ("benchmarks.gallery_vectors", "embed SynthPEDES images and captions for the search benchmark"),
    "service-load": ("benchmarks.service_load", "the HTTP service: concurrent searches while uploads and deletes happen"),
    "ingest": ("benchmarks.ingest", "partsearch ingest: video frames/s with the HOG detector"),
    "tracks": ("benchmarks.tracks", "ingest's tracks and detections against ground truth (IDF1, MOTA, ...)"),
    "track-search": ("benchmarks.track_search", "track-level search: R@1 of max vs mean-top3 on synthetic tracks"),
    "store": ("benchmarks.store", "index storage: score error of float16 / int8 vectors, bytes written per change"),
    "fusion": ("benchmarks.fusion", "R@1 per level-weight rule on synthetic val / test and on real people"),
    "vtest": ("benchmarks.vtest", "R@1/R@5 of a run on captioned real people from vtest.avi"),
    "gpu": ("benchmarks.gpu_bench", "the GPU suite gpu.sh runs (ceilings, train, encode, metrics)"),
}
# `all` runs the CPU suite; `ablation` trains models and `gpu` is gpu.sh's job, so both are opt-in.
ALL = ["synth", "metrics", "heads", "train-step", "encode", "search", "ingest"]


def usage() -> str:
    lines = ["usage: python -m benchmarks <name> [options]   (python -m benchmarks <name> --help)", "",
             "benchmarks:"]
    lines += [f"  {name:<11} {desc}" for name, (_, desc) in BENCHMARKS.items()]
    lines += ["  all         run " + ", ".join(ALL) + " in turn (--json-dir DIR writes DIR/<name>.json)"]
    return "\n".join(lines)


def load(name: str):
    module_name, _ = BENCHMARKS[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise SystemExit(f"benchmark '{name}' is not available: {err}") from None


def run_all(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks all")
    parser.add_argument("--json-dir", default=None, help="write <DIR>/<name>.json for each benchmark")
    parser.add_argument("--skip", action="append", default=[], choices=ALL, help="leave one out (repeatable)")
    args = parser.parse_args(argv)
    failed = []
    for name in ALL:
        if name in args.skip:
            continue
        sub = ["--json", str(Path(args.json_dir) / f"{name}.json")] if args.json_dir else []
        try:
            code = load(name).main(sub)
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
            if not isinstance(err.code, int):
                print(err.code, file=sys.stderr)
        except Exception:  # one benchmark's failure must not lose the others' figures
            traceback.print_exc()
            code = 1
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "all":
        return run_all(rest)
    if name not in BENCHMARKS:
        print(f"unknown benchmark '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    return int(load(name).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
