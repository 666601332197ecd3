"""A trained run on real people: the captioned crops of OpenCV's `vtest.avi` (issue 14, item 4).

Data: `benchmarks/data/vtest_captioned/` (its README.md says how it was made): 10 people seen in
`vtest.avi`, a campus path filmed from above, 4 crops each cut by `partsearch ingest` (HOG +
Norfair), and two captions per person written in the CUHK-PEDES style by looking at the crops. It is
in the CUHK-PEDES layout (`reid_raw.json` + `imgs/`); every image carries both captions of its
person, as CUHK-PEDES images carry theirs.

Queries: each person's two captions once (20 queries); gallery: the 40 crops. A query is right at
rank K when a crop of the described person is in its top K (identity level, as `partsearch eval`
scores CUHK-PEDES). `partsearch eval RUN --data-root benchmarks/data/vtest_captioned` gives the same
R@K (it asks each caption once per image of its person, 4 times, with the same answer) and 80
queries. Scored by `partsearch.eval.evaluate.evaluate_model`, the code `partsearch eval` runs;
chance is 10% at R@1 and 50% at R@5.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from benchmarks.common import base_parser, log, report, set_threads

DATA = Path(__file__).resolve().parent / "data" / "vtest_captioned"


def once_per_person(records):
    """The records with each person's captions on their first image only, so each caption is one
    query; the other images stay in the gallery."""
    seen = set()
    out = []
    for record in records:
        out.append(record if record.pid not in seen else dataclasses.replace(record, captions=()))
        seen.add(record.pid)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("vtest", "R@1/R@5 of a trained run on captioned real people from vtest.avi")
    parser.add_argument("--run", default="runs/demo/run", help="a trained run (default: the demo's)")
    parser.add_argument("--checkpoint", default="best", help="best | last | PATH")
    parser.add_argument("--data", default=str(DATA), help="a dataset in the CUHK-PEDES layout (test split)")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from partsearch.data.formats import load_dataset
    from partsearch.eval.evaluate import evaluate_model
    from partsearch.runs import load_run

    run = load_run(args.run, args.checkpoint, "cpu")
    splits = load_dataset("CUHK-PEDES", args.data, verbose=False)
    records = once_per_person(splits.test)
    people = len({r.pid for r in records})
    log(f"{args.run}: {sum(len(r.captions) for r in records)} captions of {people} people, {len(records)} crops")
    results = evaluate_model(run.model, run.tokenizer, run.cfg, records, splits.image_root, "cpu", progress=False)
    levels = results.get("levels") or {"all": results["t2i"]}  # "all" is t2i: every level, the run's weights
    rows = [{"similarity": level, **{k: round(v[k], 2) for k in ("R1", "R5", "R10", "mAP")}}
            for level, v in levels.items()]
    report("vtest", rows, args, notes=[
        f"run {Path(args.run).resolve()} ({args.checkpoint}); data {args.data}: {results['queries']} queries, "
        f"{results['gallery']} crops of {people} people; chance R@1 {100 / people:.0f}%, R@5 {min(100, 500 / people):.0f}%"],
        extra={"t2i": results["t2i"], "queries": results["queries"], "gallery": results["gallery"],
               "people": people, "run": str(args.run), "data": str(args.data)})
    return 0
