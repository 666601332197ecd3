"""`partsearch search INDEX_DIR "text" [--top-k K] [--json] [--tracks [--aggregate max|mean-top3]]`."""

from __future__ import annotations

import argparse

from partsearch.search.tracks import AGGREGATES, DEFAULT_AGGREGATE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index_dir", help="an index directory written by `partsearch index`")
    parser.add_argument("--run", default=None, metavar="RUN_DIR",
                        help="the trained run to embed queries with (default: the run the index records; "
                             "give it when the run moved)")
    parser.add_argument("--checkpoint", default="best", help="with --run: best | last | PATH")
    parser.add_argument("query", help="a sentence describing the person")
    parser.add_argument("--top-k", type=int, default=10, help="number of results, 1 to 1000")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--tracks", action="store_true",
                        help="rank the tracks of an index of `partsearch ingest` crops instead of images")
    parser.add_argument("--aggregate", default=DEFAULT_AGGREGATE, choices=AGGREGATES,
                        help=f"with --tracks: a track's score from its crops' scores (default {DEFAULT_AGGREGATE})")


def run(args: argparse.Namespace) -> int:
    import json

    from partsearch.search.searcher import format_table, format_track_table, open_searcher, validate_query

    validate_query(args.query, args.top_k)  # before the model is loaded, so a typo costs nothing
    searcher = open_searcher(args.index_dir, args.run, args.checkpoint)
    if args.tracks:
        response = searcher.query_tracks(args.query, args.top_k, args.aggregate)
        table = format_track_table
    else:
        response = searcher.query(args.query, args.top_k)
        table = format_table
    print(json.dumps(response.to_dict(), indent=1) if args.json else table(response))
    return 0
