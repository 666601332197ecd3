"""`partsearch data-stats --dataset NAME --root DIR [--json] [--check-images]`."""

from __future__ import annotations

import argparse
import json
import sys

DATASETS = ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid", "SynthPEDES", "jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="annotation format of the dataset")
    parser.add_argument("--root", required=True, help="dataset root (annotation file + imgs/)")
    parser.add_argument("--jsonl-file", default="", help="for --dataset jsonl: the annotation file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check-images", action="store_true",
                        help="also decode every image of every split and name the missing, corrupt or "
                             "oversized ones (do this before a long training run)")
    parser.add_argument("--max-image-pixels", type=int, default=None,
                        help="pixel limit for --check-images (default data.max_image_pixels)")


def run(args: argparse.Namespace) -> int:
    from partsearch.config import DataConfig
    from partsearch.data.formats import format_stats_table, load_dataset

    splits = load_dataset(args.dataset, args.root, jsonl_file=args.jsonl_file or None, verbose=False)
    stats = splits.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_stats_table(splits.name, stats))
    if args.check_images:
        check_images(splits, args.max_image_pixels or DataConfig.max_image_pixels)
    return 0


def check_images(splits, max_pixels: int) -> None:
    """Decode every image once; raise one DataError naming the bad ones, or print that all are fine."""
    from partsearch.data.datasets import find_bad_images
    from partsearch.errors import DataError

    records = {r.image: r for name in ("train", "val", "test") for r in (getattr(splits, name) or [])}
    bad = find_bad_images(list(records.values()), splits.image_root, max_pixels, progress=True)
    if bad:
        shown = "; ".join(why for _, why in bad[:5])
        raise DataError(f"{len(bad)} of {len(records)} images under {splits.image_root} cannot be used: {shown}"
                        f"{' ...' if len(bad) > 5 else ''}; fix or remove them, or train with data.skip_bad_images=true")
    print(f"checked {len(records)} images under {splits.image_root}: all readable", file=sys.stderr)
