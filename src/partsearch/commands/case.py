"""`partsearch case ...`: a person's sightings, cases of them, and their export.

    partsearch case sightings --index INDEX_DIR --id ID [--case NAME] [--top-k 20] [--max-gap S] [--json]
    partsearch case add NAME --index INDEX_DIR --id ID [--confirm | --reject] [--query TEXT] [--score S] [--note TEXT]
    partsearch case show NAME --index INDEX_DIR [--json]
    partsearch case list --index INDEX_DIR
    partsearch case export NAME --index INDEX_DIR --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index", required=True, metavar="INDEX_DIR", help="the index the case belongs to")
    common.add_argument("--run", default=None, metavar="RUN_DIR", help="the run, when it moved since indexing")
    found = actions.add_parser("sightings", parents=[common], help="find this person everywhere")
    found.add_argument("--id", type=int, required=True, help="an image id (a crop of the person; its track is used)")
    found.add_argument("--case", default=None, help="re-rank with this case's confirmed and rejected sightings")
    found.add_argument("--top-k", type=int, default=20, help="tracks to find (besides the known ones)")
    found.add_argument("--max-gap", type=float, default=None,
                       help="leave out tracks further than this many seconds from every known sighting")
    found.add_argument("--json", action="store_true", help="print JSON")
    add = actions.add_parser("add", parents=[common], help="add a sighting to a case, or decide one")
    add.add_argument("name", help="the case (created when new)")
    add.add_argument("--id", type=int, required=True, help="an image id (its track is the sighting)")
    decision = add.add_mutually_exclusive_group()
    decision.add_argument("--confirm", action="store_true", help="the same person")
    decision.add_argument("--reject", action="store_true", help="not this person")
    add.add_argument("--query", default="", help="the query that found it")
    add.add_argument("--score", type=float, default=None, help="its score")
    add.add_argument("--note", default="", help="a note")
    show = actions.add_parser("show", parents=[common], help="print a case")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    actions.add_parser("list", parents=[common], help="the cases of an index")
    export = actions.add_parser("export", parents=[common], help="write a case's evidence to a new folder")
    export.add_argument("name")
    export.add_argument("--out", required=True, help="a folder that does not exist yet")


def run(args: argparse.Namespace) -> int:
    import json

    from partsearch.search.cases import CaseStore, check_name

    cases = CaseStore(args.index)
    if args.action == "list":
        print("\n".join(cases.names()) or f"no cases in {cases.root}")
        return 0
    if args.action == "show":
        case = cases.load(args.name)
        print(json.dumps(case.to_dict(), indent=1) if args.json else format_case(case))
        return 0
    if args.action in ("add", "export"):
        check_name(args.name)  # before the model is loaded
    from partsearch.search.searcher import open_searcher

    searcher = open_searcher(args.index, args.run)
    if args.action == "sightings":
        from partsearch.search.sightings import find_sightings

        case = cases.load(args.case) if args.case else None
        response = find_sightings(searcher, args.id, args.top_k, case, args.max_gap)
        print(json.dumps(response.to_dict(), indent=1) if args.json else format_sightings(response))
    elif args.action == "add":
        from partsearch.search.sightings import add_sighting

        decision = "confirmed" if args.confirm else "rejected" if args.reject else None
        case = add_sighting(searcher, args.name, args.id, decision, args.query, args.score, args.note)
        print(format_case(case))
    else:
        from partsearch.search.export import export_case

        body = export_case(searcher, args.name, args.out)
        print(f"case {args.name}: {len(body['sightings'])} sightings written to {args.out} "
              "(case.json, sightings.csv, crops/, frames/, clips/)")
        for line in body["missing"]:
            print(f"  missing: {line}")
    return 0


def video_name(video: str | None) -> str:
    """A video as the case tables name it: its file name, as the page does (the record keeps it
    relative to the index's images root, which reads as `../../..` for a video kept elsewhere; the
    camera beside it says where, and `--json` and the export keep the full record)."""
    return Path(video).name if video else ""


def format_case(case) -> str:
    lines = [f"case {case.name}: {len(case.sightings)} sightings" + (f"; notes: {case.notes}" if case.notes else "")]
    for n, s in enumerate(case.sightings, start=1):
        wall = f" ({s.wall_time})" if s.wall_time else ""
        where = (f"camera {s.camera}, {video_name(s.video)} track {s.track} at {s.time:.2f} s{wall}" if s.video
                 else f"image {s.relpath}")
        lines.append(f"{n:>4}  {s.decision or 'undecided':<10} id {s.id}: {where}" + (f"  ({s.note})" if s.note else ""))
    return "\n".join(lines)


def format_sightings(response) -> str:
    lines = [f"sightings of image {response.source.id} ({response.source.camera or 'no camera'}), "
             f"track score: {response.aggregate} of its crops' scores against the person"]
    by_rank = {r.rank: r for r in response.results}
    for camera, ranks in response.timeline.items():
        lines.append(f"camera {camera}:")
        for rank in ranks:
            r = by_rank[rank]
            s = r.sighting
            when = f"{s.start:.2f}-{s.end:.2f} s" if s.start is not None else ""
            wall = f" ({s.wall_time})" if s.wall_time else ""
            lines.append(f"  #{rank:<3} {s.score:7.4f}  {r.role:<9} {video_name(s.video) or s.relpath} track {s.track} {when}{wall}"
                         f"  best crop id {s.id}" + (f", {s.decision}" if s.decision else ""))
    return "\n".join(lines)
