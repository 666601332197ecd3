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
queries. Scored by `partsearch.eval.evaluate` (`embed_split` + `score_embeddings`), the code
`partsearch eval` runs; chance is 10% at R@1 and 50% at R@5. Per caption, it also gives the rank of
the described person among the 10 (each person placed by its best crop), to see who is missed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

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


def person_ranks(similarity: torch.Tensor, text_ids: torch.Tensor, image_ids: torch.Tensor) -> list[int]:
    """Similarity `(Q, G)` with the identities of its queries and crops -> per query, the rank of the
    described person among the people, each placed by its best crop (1 = first; R@1 counts 1s)."""
    people = torch.unique(image_ids)
    column = torch.searchsorted(people, image_ids)
    best = torch.full((len(similarity), len(people)), float("-inf")).scatter_reduce(
        1, column.expand_as(similarity), similarity.float(), "amax")
    right = best.gather(1, torch.searchsorted(people, text_ids)[:, None])
    return (1 + (best > right).sum(1)).tolist()


def model_threshold(run) -> float | None:
    """The run's match threshold on its val split (`partsearch.search.threshold.for_run`)."""
    from partsearch.search import threshold
    from partsearch.search.encoder import RunEncoder

    return threshold.for_run(RunEncoder(None, device="cpu", run=run))


def threshold_rates(similarity: torch.Tensor, text_ids: torch.Tensor, image_ids: torch.Tensor,
                    model: float | None) -> list[dict]:
    """Per rule, the share of captions whose described person (by their best crop) passes the
    match threshold and the share of other people (by their best crops) it flags: the model's
    threshold and the gallery's (`threshold.gallery_threshold` on the caption's scores over every
    crop), which `threshold.for_query` applies to footage."""
    import numpy as np

    from partsearch.search.threshold import GALLERY_Z, gallery_threshold

    people = torch.unique(image_ids).tolist()
    rules = {f"gallery's, median + {GALLERY_Z:g} robust sigma (footage default)": gallery_threshold,
             "gallery's, median + 1.5 robust sigma": lambda row: gallery_threshold(row, z=1.5)}
    if model is not None:
        rules = {"model's (val split)": lambda row: model, **rules}
    out = []
    for name, rule in rules.items():
        passed, flagged = [], []
        for q, row in enumerate(similarity.float().numpy()):
            cut = rule(row)
            for pid in people:
                best = float(np.max(row[(image_ids == pid).numpy()]))
                (passed if pid == int(text_ids[q]) else flagged).append(best >= cut if pid == int(text_ids[q])
                                                                       else best < cut)
        out.append({"rule": name, "described_passes": float(np.mean(passed)),
                    "others_flagged": float(np.mean(flagged))})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("vtest", "R@1/R@5 of a trained run on captioned real people from vtest.avi")
    parser.add_argument("--run", default="runs/demo/run", help="a trained run (default: the demo's)")
    parser.add_argument("--checkpoint", default="best", help="best | last | PATH")
    parser.add_argument("--data", default=str(DATA), help="a dataset in the CUHK-PEDES layout (test split)")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from partsearch.data.formats import load_dataset
    from partsearch.eval.evaluate import embed_split, level_weights, score_embeddings
    from partsearch.model.similarity import fold_gallery, fold_query
    from partsearch.runs import load_run

    run = load_run(args.run, args.checkpoint, "cpu")
    splits = load_dataset("CUHK-PEDES", args.data, verbose=False)
    records = once_per_person(splits.test)
    people = len({r.pid for r in records})
    log(f"{args.run}: {sum(len(r.captions) for r in records)} captions of {people} people, {len(records)} crops")
    image_emb, text_emb = embed_split(run.model, run.tokenizer, run.cfg, records, splits.image_root, "cpu", False)
    image_ids = torch.tensor([r.pid for r in records])
    text_ids = torch.tensor([r.pid for r in records for _ in r.captions])
    results = score_embeddings(image_emb, text_emb, image_ids, text_ids, run.cfg)
    similarity = fold_query(text_emb, level_weights(run.cfg)["all"]) @ fold_gallery(image_emb).T
    ranks = person_ranks(similarity, text_ids, image_ids)
    flags = threshold_rates(similarity, text_ids, image_ids, model_threshold(run))
    by_person: dict[int, list[int]] = {}
    for pid, rank in zip(text_ids.tolist(), ranks):
        by_person.setdefault(pid, []).append(rank)
    levels = results.get("levels") or {"all": results["t2i"]}  # "all" is t2i: every level, the run's weights
    rows = [{"similarity": level, **{k: round(v[k], 2) for k in ("R1", "R5", "R10", "mAP")}}
            for level, v in levels.items()]
    report("vtest", rows, args, notes=[
        f"run {Path(args.run).resolve()} ({args.checkpoint}); data {args.data}: {results['queries']} queries, "
        f"{results['gallery']} crops of {people} people; chance R@1 {100 / people:.0f}%, R@5 {min(100, 500 / people):.0f}%",
        "rank of the described person among the people (all levels; each person placed by its best crop), "
        "per caption: " + "  ".join(f"{pid}: {','.join(map(str, r))}" for pid, r in sorted(by_person.items())),
        "match threshold, each caption's people by their best crop: " + "; ".join(
            f"{f['rule']}: described person passes {f['described_passes']:.0%}, others flagged "
            f"{f['others_flagged']:.0%}" for f in flags)],
        extra={"t2i": results["t2i"], "queries": results["queries"], "gallery": results["gallery"],
               "people": people, "run": str(args.run), "data": str(args.data),
               "person_ranks": {str(pid): r for pid, r in sorted(by_person.items())}, "match_threshold": flags})
    return 0
