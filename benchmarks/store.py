"""The index store (`partsearch.search.store`): what storing the folded vectors compactly does to
the scores, and how many bytes a change writes.

Scores: a trained run embeds its split's images (default: the demo's test split) and every caption
of the split; the scores fold_query(t) . fold_gallery(v) are computed with the gallery's folded
vectors as float32 (the reference), float16 (what the store keeps) and int8 with one scale per
folded vector (max |x| / 127, the alternative). Reported per storage: bytes per image, the max and
mean |score - float32 score| over all caption x image pairs, t2i R@1 and the overlap of each
query's top 10 with the float32 top 10.

Writes: the same images are indexed with `build_index` (the code `partsearch index` runs), then one
image is uploaded (`add_image`) and deleted (`delete_image`); reported are the bytes of the files
each step created or changed, beside the index's size (what the older format, which rewrote every
array on every change, wrote per change: about the whole index).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from benchmarks.common import base_parser, log, report, set_threads


def quantize_int8(folded: np.ndarray) -> np.ndarray:
    """int8 with one scale per vector (max |x| / 127), dequantized back to float32."""
    scale = np.abs(folded).max(axis=1, keepdims=True) / 127.0
    return (np.round(folded / scale).astype(np.int8) * scale).astype(np.float32)


def top_overlap(scores: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    found = np.argsort(-scores, axis=1)[:, :k]
    exact = np.argsort(-reference, axis=1)[:, :k]
    return float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact)]))


def _files(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file()}


def _written(before: dict, after: dict) -> int:
    return sum(info[2] for name, info in after.items() if before.get(name) != info)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("store", "index storage: score error of float16 / int8 vectors, bytes written per change")
    parser.add_argument("--run", default="runs/demo/run", help="a trained run (default: the demo's)")
    parser.add_argument("--split", default="test", help="the run's dataset split to embed")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from partsearch.data.formats import load_dataset
    from partsearch.eval.metrics import retrieval_metrics
    from partsearch.runs import load_run, run_data_path
    from partsearch.search.encoder import RunEncoder
    from partsearch.search.index import build_index
    from partsearch.search.writes import add_image, delete_image
    from partsearch.search.store import IndexStore

    run = load_run(args.run, "best", "cpu")
    splits = load_dataset(run.cfg.data.dataset, run_data_path(Path(args.run), run.cfg.data.root), verbose=False)
    records = splits.split(args.split)
    encoder = RunEncoder(None, device="cpu", run=run)
    captions = [(c, r.pid) for r in records for c in r.captions]
    log(f"{len(records)} images, {len(captions)} captions of the {args.split} split")
    folded = np.concatenate([encoder.fold_gallery(encoder.encode_images(
        [Image.open(splits.image_root / r.image).convert("RGB") for r in records[i:i + 64]]))
        for i in range(0, len(records), 64)])
    query = np.concatenate([encoder.fold_query(encoder.encode_texts([c for c, _ in captions[i:i + 64]])[0])
                            for i in range(0, len(captions), 64)])
    reference = query @ folded.T
    query_ids = torch.tensor([p for _, p in captions])
    gallery_ids = torch.tensor([r.pid for r in records])
    dim = folded.shape[1]
    rows = []
    for name, stored, nbytes in (("float32", folded, 4 * dim), ("float16", folded.astype(np.float16), 2 * dim),
                                 ("int8 + scale", quantize_int8(folded), dim + 4)):
        scores = query @ np.asarray(stored, np.float32).T
        diff = np.abs(scores - reference)
        rows.append({"storage": name, "bytes/image": nbytes, "max |ds|": f"{diff.max():.2e}",
                     "mean |ds|": f"{diff.mean():.2e}",
                     "R1": retrieval_metrics(torch.from_numpy(scores), query_ids, gallery_ids)["R1"],
                     "top10 overlap": top_overlap(scores, reference)})

    work = Path(tempfile.mkdtemp(prefix="partsearch-store-bench-"))
    try:
        images = work / "images"
        for r in records:
            (images / r.image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(splits.image_root / r.image, images / r.image)
        index = work / "index"
        build_index(encoder, images, index, progress=False)
        store = IndexStore(index)
        stored = store.load()
        assert np.array_equal(np.asarray(stored.folded), np.asarray(folded[[
            [r.image for r in records].index(e.path) for e in stored.entries]], np.float16))
        size = sum(info[2] for info in _files(index).values())
        upload = ImageOps.mirror(Image.open(images / records[0].image).convert("RGB"))
        path = work / "upload.png"
        upload.save(path)
        before = _files(index)
        entry, _, _ = add_image(store, encoder, path.read_bytes(), "upload.png")
        after_add = _files(index)
        delete_image(store, entry.id)
        writes = [{"step": "index size", "bytes": size},
                  {"step": "add 1 image", "bytes": _written(before, after_add)},
                  {"step": "delete 1 image", "bytes": _written(after_add, _files(index))}]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ranked = -np.sort(-reference, axis=1)
    report("store", rows + writes, args,
           notes=[f"{len(records)} images x {len(captions)} captions of {args.run} ({args.split}), D = {dim}",
                  f"float32 scores: median gap between a query's 1st and 2nd {np.median(ranked[:, 0] - ranked[:, 1]):.2e}, "
                  f"between its 10th and 11th {np.median(ranked[:, 9] - ranked[:, 10]):.2e}",
                  "the store's folded vectors equal the float16 rounding of the encoder's, bit for bit",
                  "add 1 image includes the uploaded file itself"],
           columns=["storage", "bytes/image", "max |ds|", "mean |ds|", "R1", "top10 overlap", "step", "bytes"])
    return 0
