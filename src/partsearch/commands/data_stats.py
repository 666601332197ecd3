"""`partsearch data-stats --dataset NAME --root DIR [--json]`."""

from __future__ import annotations

import argparse
import json

DATASETS = ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid", "SynthPEDES", "jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", required=True, help="dataset root (annotation file + imgs/)")
    parser.add_argument("--jsonl-file", default="", help="for --dataset jsonl: the annotation file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from partsearch.data.formats import format_stats_table, load_dataset

    splits = load_dataset(args.dataset, args.root, jsonl_file=args.jsonl_file or None, verbose=False)
    stats = splits.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_stats_table(splits.name, stats))
    return 0
