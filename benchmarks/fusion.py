"""Which level weights rank best where: a run's R@1 per fusion rule on its synthetic val and test
splits and on real people (issue 25, item 4; "check any fusion on your own captioned vtest set").

The similarity is w_g cos_g + w_c mean cos_c + w_f mean cos_f (METHOD.md, Similarity). For each
(1, w_c, w_f) of the grid the run's level-weight fit searches (`partsearch.eval.fusion.GRID`), the
table gives R@1 on the run's val split (what the fit sees), its test split, and the 10 captioned
people of `vtest.avi` (`benchmarks/data/vtest_captioned`, scored as `python -m benchmarks vtest`
does: each caption once, a person placed by their best crop). The rule the run chose is marked.
SynthPEDES val can prefer one rule while real people prefer another: this table is how to see it.

    python -m benchmarks fusion --run RUN_DIR [--json OUT]
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from benchmarks.common import base_parser, log, report, set_threads
from benchmarks.vtest import DATA, once_per_person, person_ranks


def r1_per_weights(image_emb, text_emb, image_ids, text_ids, grid, by_person: bool) -> dict[tuple, float]:
    from partsearch.eval.metrics import retrieval_metrics
    from partsearch.model.similarity import fold_gallery, fold_query

    gallery = fold_gallery(image_emb)
    out = {}
    for weights in grid:
        similarity = fold_query(text_emb, weights) @ gallery.T
        if by_person:
            ranks = person_ranks(similarity, text_ids, image_ids)
            out[weights] = 100.0 * sum(r == 1 for r in ranks) / len(ranks)
        else:
            out[weights] = float(retrieval_metrics(similarity, text_ids, image_ids)["R1"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("fusion", "R@1 per level-weight rule on synthetic val / test and on real people")
    parser.add_argument("--run", default="runs/demo/run", help="a trained run (default: the demo's)")
    parser.add_argument("--checkpoint", default="best", help="best | last | PATH")
    parser.add_argument("--real", default=str(DATA), help="captioned real people in the CUHK-PEDES layout")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from partsearch.data.formats import load_dataset
    from partsearch.eval.evaluate import embed_split
    from partsearch.eval.fusion import GRID, embed_shifted_gallery
    from partsearch.runs import read_level_weights
    from partsearch.runs import load_run, run_data_path

    run_dir = Path(args.run)
    run = load_run(run_dir, args.checkpoint, "cpu", level_weights=False)
    splits = load_dataset(run.cfg.data.dataset, run_data_path(run_dir, run.cfg.data.root), verbose=False)
    real = load_dataset("CUHK-PEDES", args.real, verbose=False)
    sets = {"val": (splits.val, splits.image_root, False), "test": (splits.test, splits.image_root, False),
            "real people": (once_per_person(real.test), real.image_root, True)}
    grid = [(1.0, float(c), float(f)) for c, f in itertools.product(GRID, GRID)]
    columns: dict[str, dict[tuple, float]] = {}
    for name, (records, root, by_person) in sets.items():
        if not records:
            continue
        image_emb, text_emb = embed_split(run.model, run.tokenizer, run.cfg, records, root, "cpu", False)
        image_ids = torch.tensor([r.pid for r in records])
        text_ids = torch.tensor([r.pid for r in records for _ in r.captions])
        columns[name] = r1_per_weights(image_emb, text_emb, image_ids, text_ids, grid, by_person)
        if name == "val":
            columns["val shifted"] = r1_per_weights(embed_shifted_gallery(run, records, root), text_emb, image_ids,
                                                    text_ids, grid, by_person)
        log(f"{name}: {len(text_ids)} queries, {len(records)} images")
    chosen = read_level_weights(run_dir)
    rows = []
    for weights in grid:
        row = {"w_c": weights[1], "w_f": weights[2]}
        row.update({f"{name} R1": round(col[weights], 2) for name, col in columns.items()})
        row["rule"] = " ".join(label for label, hit in (("global", weights[1:] == (0.0, 0.0)),
                                                        ("plain sum", weights == (1.0, 1.0, 1.0)),
                                                        ("<- chosen", chosen == weights)) if hit)
        rows.append(row)
    report("fusion", rows, args, notes=[
        f"run {run_dir.resolve()} ({args.checkpoint}); w_g = 1; chosen {chosen or 'none (no level_weights.json)'}; "
        f"real people: {args.real} (each caption once, a person placed by their best crop)"])
    return 0
