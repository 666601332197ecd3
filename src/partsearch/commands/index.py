"""`partsearch index RUN_DIR --images DIR --out INDEX_DIR [--index-factory SPEC]`; a DIR written by
`partsearch ingest` is indexed with its video records, so `search --tracks` can return tracks."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a trained run directory")
    parser.add_argument("--images", required=True, help="folder of pedestrian crops (searched recursively)")
    parser.add_argument("--out", required=True, help="index directory (created or updated)")
    parser.add_argument("--checkpoint", default="best", help="best | last | PATH")
    parser.add_argument(
        "--index-factory", default="auto",
        help="auto (default: exact up to 20,000 images, PCA256,IVF<n>,SQ8 beyond, chosen by size and "
             "reported), Flat (exact), or any FAISS factory string as an approximate first stage "
             "(HNSW32, PCA256,IVF1024,SQ8; exact re-ranking)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images embedded at once (and per checkpointed batch)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def run(args: argparse.Namespace) -> int:
    from partsearch.search.encoder import RunEncoder
    from partsearch.search.index import build_index
    from partsearch.video.ingest import read_records

    encoder = RunEncoder(args.run_dir, args.checkpoint, args.device)
    # A gallery written by `partsearch ingest` carries a record per crop: its tracks become searchable.
    records = read_records(args.images)
    report = build_index(encoder, args.images, args.out, index_factory=args.index_factory,
                         batch_size=args.batch_size, video_records=records)
    print(report.summary())
    return 0
