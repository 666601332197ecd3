"""`partsearch search INDEX_DIR ["text"] [--image PATH | --like ID] [filters] [--top-k K] [--json]
[--tracks [--aggregate max|mean-top3]]`."""

from __future__ import annotations

import argparse

from partsearch.search.tracks import AGGREGATES, DEFAULT_AGGREGATE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index_dir", help="an index directory written by `partsearch index`")
    parser.add_argument("--run", default=None, metavar="RUN_DIR",
                        help="the trained run to embed queries with (default: the run the index records; "
                             "give it when the run moved)")
    parser.add_argument("--checkpoint", default="best", help="with --run: best | last | PATH")
    parser.add_argument("query", nargs="?", default="", help="a sentence describing the person")
    parser.add_argument("--top-k", type=int, default=10, help="number of results, 1 to 1000")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--tracks", action="store_true",
                        help="rank the tracks of an index of `partsearch ingest` crops instead of images")
    parser.add_argument("--aggregate", default=DEFAULT_AGGREGATE, choices=AGGREGATES,
                        help=f"with --tracks: a track's score from its crops' scores (default {DEFAULT_AGGREGATE})")
    image = parser.add_argument_group("query by image (with or without a text)")
    image.add_argument("--image", metavar="PATH", help="a photo of the person (JPEG, PNG or WebP)")
    image.add_argument("--like", type=int, metavar="ID", help="an indexed image's id: more like this")
    image.add_argument("--text-weight", type=float, default=None,
                       help="with a text and an image: the text score's weight, 0 to 1 (default 0.25)")
    filters = parser.add_argument_group("filters (crops of ingested video)")
    filters.add_argument("--camera", action="append", default=[], help="a camera name or number (repeatable)")
    filters.add_argument("--video", action="append", default=[], help="a video path or file name (repeatable)")
    filters.add_argument("--track", action="append", type=int, default=[], help="a track id (repeatable)")
    filters.add_argument("--after", help="H:MM[:SS], seconds, or YYYY-MM-DDTHH:MM[:SS][+HH:MM]")
    filters.add_argument("--before", help="as --after")
    filters.add_argument("--min-score", type=float, help="leave out results scoring below this")
    filters.add_argument("--literal", action="store_true",
                         help="search the text as typed: no filter phrases ('on camera 2 after 14:00') taken from it")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from partsearch.errors import QueryError
    from partsearch.search.filters import Filters
    from partsearch.search.display import format_table, format_track_table
    from partsearch.search.searcher import (TEXT_WEIGHT, open_searcher, validate_query, validate_top_k,
                                            check_encodable)

    # Checked before the model is loaded, so a typo costs nothing.
    filters = Filters(tuple(args.camera), tuple(args.video), tuple(args.track), args.after, args.before,
                      args.min_score)
    validate_top_k(args.top_k)
    check_encodable(args.query)  # before the model is loaded: a lone surrogate is one line, not a traceback
    image = None
    if args.image is not None:
        path = Path(args.image)
        if not path.is_file():
            raise QueryError(f"--image {args.image}: no such file")
        image = path.read_bytes()
    if args.tracks:
        validate_query(args.query, args.top_k)
        if image is not None or args.like is not None:
            raise QueryError("--tracks searches by text; leave out --image and --like")
    elif not args.query.strip() and image is None and args.like is None:
        raise QueryError("the query is empty: give a text describing the person, --image PATH or --like ID")
    searcher = open_searcher(args.index_dir, args.run, args.checkpoint)
    if args.tracks:
        response = searcher.query_tracks(args.query, args.top_k, args.aggregate, filters, words=not args.literal)
        table = format_track_table
    else:
        response = searcher.query(args.query, args.top_k, image=image, like=args.like, filters=filters,
                                  text_weight=TEXT_WEIGHT if args.text_weight is None else args.text_weight,
                                  image_name=Path(args.image).name if args.image else "upload",
                                  words=not args.literal)
        table = format_table
    print(json.dumps(response.to_dict(), indent=1) if args.json else table(response))
    return 0
