"""Level weights chosen on the validation split at the end of training [ours].

The similarity is s(v, t) = w_g cos_g + w_c mean cos_c + w_f mean cos_f (METHOD.md, Similarity);
the paper's weights are not known and (1, 1, 1) is its plain sum. On the demo the part levels can
rank worse than the global level alone (a 195-step run: R@1 65.31 global, 57.14 all), so a run
fits (w_c, w_f) with w_g = 1 on its VAL split, from `GRID` x `GRID`: the pair with the best val R@1,
then mAP, then the one nearest the plain sum. (0, 0) is in the grid, so on val the chosen rule is
never below the global level; the test split never takes part. The choice is saved in the run
(`level_weights.json`), and `partsearch.load` gives it to everything that scores: eval, the index,
search, the service and the page.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import torch

from partsearch.eval.metrics import retrieval_metrics
from partsearch.files import write_text_atomic
from partsearch.model.similarity import fold_gallery, fold_query

LEVEL_WEIGHTS = "level_weights.json"
GRID = (0.0, 0.25, 0.5, 1.0, 2.0)


def choose_level_weights(image_emb, text_emb, image_ids: torch.Tensor, text_ids: torch.Tensor,
                         grid: tuple[float, ...] = GRID) -> tuple[tuple[float, float, float], list[dict[str, Any]]]:
    """The chosen (1, w_c, w_f) and one row per grid pair `{"weights", "R1", "mAP"}` (percent)."""
    gallery = fold_gallery(image_emb)
    rows = []
    for w_c, w_f in itertools.product(grid, grid):
        weights = (1.0, float(w_c), float(w_f))
        metrics = retrieval_metrics(fold_query(text_emb, weights) @ gallery.T, text_ids, image_ids)
        rows.append({"weights": list(weights), "R1": metrics["R1"], "mAP": metrics["mAP"]})
    best = max(rows, key=lambda r: (round(r["R1"], 6), round(r["mAP"], 6),
                                    -abs(r["weights"][1] - 1.0) - abs(r["weights"][2] - 1.0)))
    return tuple(best["weights"]), rows


def fit_level_weights(run_dir: str | Path, splits, checkpoint: str = "best", device: str = "cpu") -> dict | None:
    """Choose the level weights of a trained run on its val split and save them in the run
    (`level_weights.json`); None, and nothing written, when the dataset has no val split."""
    from partsearch.eval.evaluate import embed_split
    from partsearch.runs import load_run

    records = splits.val or []
    if not records:
        return None
    run = load_run(run_dir, checkpoint, device=device, level_weights=False)
    image_emb, text_emb = embed_split(run.model, run.tokenizer, run.cfg, records, splits.image_root, device,
                                      progress=False)
    image_ids = torch.tensor([r.pid for r in records])
    text_ids = torch.tensor([r.pid for r in records for _ in r.captions])
    weights, rows = choose_level_weights(image_emb, text_emb, image_ids, text_ids)
    plain = next(r for r in rows if r["weights"] == [1.0, 1.0, 1.0])
    chosen = next(r for r in rows if r["weights"] == list(weights))
    result = {"weights": list(weights), "split": "val", "checkpoint": checkpoint,
              "val_R1": chosen["R1"], "val_mAP": chosen["mAP"], "plain_sum_val_R1": plain["R1"], "grid": rows}
    write_text_atomic(Path(run_dir) / LEVEL_WEIGHTS, json.dumps(result, indent=1) + "\n")
    return result


def read_level_weights(run_dir: str | Path) -> tuple[float, float, float] | None:
    """The weights a run chose on val, None when it has none (or the file is unreadable)."""
    try:
        weights = json.loads((Path(run_dir) / LEVEL_WEIGHTS).read_text())["weights"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(weights, list) and len(weights) == 3 and all(isinstance(w, (int, float)) for w in weights)):
        return None
    return tuple(float(w) for w in weights)
