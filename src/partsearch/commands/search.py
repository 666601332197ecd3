"""`partsearch search INDEX_DIR "text" [--top-k K] [--json]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index_dir", help="an index directory written by `partsearch index`")
    parser.add_argument("--run", default=None, metavar="RUN_DIR",
                        help="the trained run to embed queries with (default: the run the index records; "
                             "give it when the run moved)")
    parser.add_argument("--checkpoint", default="best", help="with --run: best | last | PATH")
    parser.add_argument("query", help="a sentence describing the person")
    parser.add_argument("--top-k", type=int, default=10, help="number of results, 1 to 1000")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from partsearch.search.searcher import format_table, open_searcher, validate_query

    validate_query(args.query, args.top_k)  # before the model is loaded, so a typo costs nothing
    searcher = open_searcher(args.index_dir, args.run, args.checkpoint)
    response = searcher.query(args.query, args.top_k)
    print(json.dumps(response.to_dict(), indent=1) if args.json else format_table(response))
    return 0
