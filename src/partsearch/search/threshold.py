"""When is a search result a good match? For an index of plain crops, above the model's threshold,
measured on validation pairs; for an index of camera footage, above the gallery's, calibrated per
query on the index's own scores [ours].

The model's score s(v, t) (METHOD.md, Similarity) has no absolute meaning on its own: a query that
matches nobody in the gallery still has a first result. On the run's validation split every
caption is scored against every image; pairs of the same identity are matches, the rest are not,
and the threshold is the score that separates them best (the largest balanced accuracy, the mean
of the two recall rates, so the far more numerous non-matching pairs do not dominate). A result
below it is shown as a weak match. The threshold is measured once per model and kept in the run
directory (`match_threshold.json`, keyed by the model fingerprint).

On footage unlike the training data every score shifts, and not always the same way: on
`vtest.avi` the demo model's right answers all score below its SynthPEDES threshold (every result
weak), while another SynthPEDES run's threshold passes 95% of the described people and 66% of the
others. The gallery's threshold asks instead whether a result stands out from this gallery for this
query: the median of the query's scores over the gallery (a sample of up to `SAMPLE` crops) plus
`GALLERY_Z` robust standard deviations (1.4826 x the median absolute deviation, which a few
matching crops do not move). `GALLERY_Z` = 1.0 was chosen on a SynthPEDES val split (balanced
accuracy of "the described person passes, the others do not"); on the captioned real people of
`vtest.avi` it keeps 55% of the described people and flags 66% of the others
(`python -m benchmarks vtest`, docs/VIDEO.md). It applies to indexes holding tracks from
`partsearch ingest` (footage, where the training domain's threshold is known not to hold); an
index of plain crops keeps the model's threshold. The price: in footage, a query that no one
matches but someone half-matches (the right coat in the wrong colour) still gets good matches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from partsearch.files import write_text_atomic

FILE = "match_threshold.json"
BATCH = 64
GALLERY_Z = 1.0
SAMPLE = 4096
MAD_TO_SIGMA = 1.4826


def gallery_threshold(scores: np.ndarray, z: float = GALLERY_Z) -> float:
    """The score that stands out from a query's `scores` over a gallery: median + z robust sigmas."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    median = float(np.median(scores))
    return median + z * MAD_TO_SIGMA * float(np.median(np.abs(scores - median)))


def for_query(folded_gallery, rows, folded_query: np.ndarray, model_threshold: float | None,
              footage: bool) -> float | None:
    """The match threshold of one query: the model's (None: unknown) or, for `footage`, the
    gallery's, on the live `rows` of `folded_gallery` (`(n, D)` indexable by a row array; evenly
    spaced when more than `SAMPLE`; the model's when there are none)."""
    rows = np.asarray(sorted(rows), dtype=np.int64)
    if rule(rows, model_threshold, footage) != "gallery":
        return model_threshold
    if len(rows) > SAMPLE:
        rows = rows[np.linspace(0, len(rows) - 1, SAMPLE).astype(np.int64)]
    scores = np.asarray(folded_gallery[rows], np.float32) @ np.asarray(folded_query, np.float32).ravel()
    return gallery_threshold(scores)


def rule(rows, model_threshold: float | None, footage: bool) -> str | None:
    """Which threshold `for_query` gives for the same arguments: "gallery" (standing out from this
    gallery for the query, footage), "model" (the model's, from its validation split) or None
    (none known). What a reader is told the threshold means."""
    if footage and len(rows):
        return "gallery"
    return None if model_threshold is None else "model"


def describe(rule_: str | None) -> str:
    """The threshold `rule` names, in words for a result list ("" for None)."""
    return {"gallery": "where a score stands out from this gallery for this query (its median + 1 robust sd)",
            "model": "where matching and non-matching pairs part on the model's validation split"}.get(rule_, "")


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
