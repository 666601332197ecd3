"""When is a search result a good match? A score threshold measured on validation pairs [ours].

The model's score s(v, t) (METHOD.md, Similarity) has no absolute meaning on its own: a query that
matches nobody in the gallery still has a first result. On the run's validation split every
caption is scored against every image; pairs of the same identity are matches, the rest are not,
and the threshold is the score that separates them best (the largest balanced accuracy, the mean
of the two recall rates, so the far more numerous non-matching pairs do not dominate). A result
below it is shown as a weak match. The threshold is measured once per model and kept in the run
directory (`match_threshold.json`, keyed by the model fingerprint).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from partsearch.files import write_text_atomic

FILE = "match_threshold.json"
BATCH = 64


def best_threshold(scores: np.ndarray, matches: np.ndarray) -> float:
    """The score t maximising (recall of matches at s >= t + recall of non-matches at s < t) / 2,
    for `scores` and boolean `matches` of the same shape; the midpoint between neighbouring scores."""
    pos = np.sort(scores[matches].ravel())
    neg = np.sort(scores[~matches].ravel())
    if not len(pos) or not len(neg):
        raise ValueError("need both matching and non-matching pairs")
    candidates = np.unique(np.concatenate([pos, neg]))
    cuts = np.concatenate([candidates[:1] - 1e-6, (candidates[1:] + candidates[:-1]) / 2, candidates[-1:] + 1e-6])
    match_recall = 1 - np.searchsorted(pos, cuts, side="left") / len(pos)
    other_recall = np.searchsorted(neg, cuts, side="left") / len(neg)
    return float(cuts[int(np.argmax(match_recall + other_recall))])


def measure(encoder, records, image_root: Path, max_pixels: int) -> float:
    """The threshold of `encoder` (an Encoder) on `records` (one split): captions x images."""
    from partsearch.data.images import load_image

    folded, ids = [], []
    for start in range(0, len(records), BATCH):
        batch = records[start:start + BATCH]
        images = [load_image(image_root / r.image, max_pixels) for r in batch]
        folded.append(encoder.fold_gallery(encoder.encode_images(images)))
        ids += [r.pid for r in batch]
    captions = [(c, r.pid) for r in records for c in r.captions]
    queries = []
    for start in range(0, len(captions), BATCH):
        emb, _ = encoder.encode_texts([c for c, _ in captions[start:start + BATCH]])
        queries.append(encoder.fold_query(emb))
    scores = np.concatenate(queries) @ np.concatenate(folded).T
    matches = np.array([pid for _, pid in captions])[:, None] == np.array(ids)[None, :]
    return best_threshold(scores, matches)


def for_run(encoder) -> float | None:
    """The match threshold of a `RunEncoder`'s model: read from its run directory, or measured on
    the run's val split and kept there. None (with a note on stderr) when it cannot be had: no run
    directory, no val split, or the dataset is not where the run's config says."""
    run = getattr(encoder, "run", None)
    if run is None:
        return None
    from partsearch.data.formats import load_dataset
    from partsearch.errors import UserError
    from partsearch.runs import run_data_path

    run_dir = Path(run.path).parent
    path = run_dir / FILE
    try:
        stored = json.loads(path.read_text())
        if stored.get("fingerprint") == encoder.fingerprint:
            return float(stored["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cfg = run.cfg
    try:
        splits = load_dataset(cfg.data.dataset, run_data_path(run_dir, cfg.data.root),
                              jsonl_file=run_data_path(run_dir, cfg.data.jsonl_file) or None, verbose=False)
        if not splits.val:
            raise UserError(f"{splits.name} has no val split")
        threshold = measure(encoder, splits.val, splits.image_root, cfg.data.max_image_pixels)
    except (UserError, ValueError) as err:
        print(f"note: no match threshold for this model ({err}); results are not marked weak", file=sys.stderr)
        return None
    try:
        write_text_atomic(path, json.dumps({"fingerprint": encoder.fingerprint, "threshold": threshold,
                                            "split": "val", "images": len(splits.val)}, indent=1) + "\n")
    except OSError:
        pass  # a read-only run still gets its threshold, measured again next time
    return threshold
