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
    from partsearch.search.searcher import main

    return main(args)
