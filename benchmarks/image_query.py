"""Query by image on SynthPEDES test: image-to-image R@1 beside text-to-image, and the text + image
score rule (`search.searcher.TEXT_WEIGHT`).

`python -m benchmarks image-query --run RUN_DIR --data SYNTH_DIR` embeds the test images and
captions through the code `partsearch index` / `search` run (`RunEncoder.encode_images`,
`encode_texts`, `fold_gallery`, `fold_query`, and for a text with an image the mixing of
`Searcher.query_arrays`). Every test image is a query once; its gallery is the other test images
(the query itself left out), and its identity's other images are the matches (queries whose
identity has no other image are skipped). Rows:
- t2i: the query image's first caption alone (text-to-image, on the same galleries);
- i2i: the image alone (image-to-image over the same levels);
- t+i at text weight w: w s(v, t) + (1 - w) s(v, i), one folded vector.
R@1 / R@5 / mAP by `eval.metrics.retrieval_metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import base_parser, log, report


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("image-query", "R@1 of image-to-image and text + image queries on SynthPEDES test")
    parser.add_argument("--run", required=True, help="a trained run directory")
    parser.add_argument("--data", required=True, help="a SynthPEDES dataset (partsearch synth --out DIR)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--weights", default="0.25,0.5,0.75", help="text weights of the t+i rows")
    args = parser.parse_args(argv)

    from PIL import Image

    from partsearch.eval.metrics import retrieval_metrics
    from partsearch.search.encoder import GalleryArrays, RunEncoder

    data = Path(args.data)
    records = [r for r in json.loads((data / "reid_raw.json").read_text()) if r["split"] == args.split]
    encoder = RunEncoder(args.run, "best", device="cpu")
    images, ids, captions = [], [], []
    for r in records:
        images.append(Image.open(data / "imgs" / r["file_path"]).convert("RGB"))
        ids.append(r["id"])
        captions.append(r["captions"][0])
    log(f"{len(images)} {args.split} images of {len(set(ids))} identities")
    image_arrays = GalleryArrays.concat([encoder.encode_images(images[i:i + 64]) for i in range(0, len(images), 64)])
    text_arrays = GalleryArrays.concat([encoder.encode_texts(captions[i:i + 64])[0] for i in range(0, len(captions), 64)])
    gallery = torch.from_numpy(np.asarray(encoder.fold_gallery(image_arrays), np.float32))
    ids = torch.tensor(ids)
    keep = torch.tensor([int((ids == i).sum()) > 1 for i in ids])

    def scores(query: GalleryArrays) -> torch.Tensor:
        sim = torch.from_numpy(np.asarray(encoder.fold_query(query), np.float32)) @ gallery.T
        sim.fill_diagonal_(-float("inf"))  # the query image is not in its own gallery
        return sim[keep]

    def mixed(w: float) -> GalleryArrays:
        return GalleryArrays(w * text_arrays.global_ + (1 - w) * image_arrays.global_,
                             w * text_arrays.coarse + (1 - w) * image_arrays.coarse,
                             w * text_arrays.fine + (1 - w) * image_arrays.fine, image_arrays.foreground)

    rows = []
    for name, query in [("t2i (first caption)", text_arrays), ("i2i", image_arrays),
                        *[(f"t+i, text weight {float(w):g}", mixed(float(w))) for w in args.weights.split(",")]]:
        m = retrieval_metrics(scores(query), ids[keep], ids)
        rows.append({"query": name, "R1": m["R1"], "R5": m["R5"], "mAP": m["mAP"], "queries": int(keep.sum()),
                     "gallery": len(ids) - 1})
        log(f"{name}: R@1 {m['R1']:.2f}")
    report("image-query", rows, args, [f"run {args.run}; data {args.data} ({args.split}); gallery = the other "
                                       "images of the split; each query's own image left out"],
           columns=["query", "R1", "R5", "mAP", "queries", "gallery"])
    return 0
