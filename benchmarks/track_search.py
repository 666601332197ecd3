"""Track-level search: which way of scoring a track from its crops ranks better, `max` or
`mean-top3` (`partsearch.search.tracks`)?

Data [ours]: no video with captioned people exists here, so tracks are made from a trained run's
SynthPEDES split (default: the demo's test split, identities the model never trained on). Every
image of the split becomes one track of `--crops` crops, each the image jittered as a detector's
boxes jitter along a track (a random box of 80 to 100% of the height and width, shifted; brightness
and contrast within 20%; a mirror flip half the time; a grey block over a third of the crop for
`--occluded` of them). A tracker is not perfect: with probability `--switch` a crop of a track is
replaced by a jittered crop of another identity (an identity switch, or a neighbour in the box).
The crops are written as a `partsearch ingest` gallery (crops/, records.jsonl, video.json), indexed
with `partsearch.search.index.build_index` and the gallery's records, and searched with
`Searcher.query_tracks`, the code `partsearch search --tracks` runs.

Queries: every caption of the split; a track is relevant when its image shows the caption's
identity. Reported per switch rate and aggregate: track-level R@1, R@5 and mAP
(`eval.metrics.retrieval_metrics` over the tracks' scores), mean and spread over `--seeds`.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from benchmarks.common import base_parser, log, positive, report, set_threads

TRACKS_PER_VIDEO = 8


def jitter(image: Image.Image, rng: np.random.Generator, occlude: bool) -> Image.Image:
    """One crop of a track: `image` as a detector might box it in another frame."""
    w, h = image.size
    cw, ch = int(w * rng.uniform(0.8, 1.0)), int(h * rng.uniform(0.8, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = image.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BILINEAR)
    crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.8, 1.2))
    crop = ImageEnhance.Contrast(crop).enhance(rng.uniform(0.8, 1.2))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    if occlude:
        bh = h // 3
        top = int(rng.integers(0, h - bh + 1))
        crop.paste((128, 128, 128), (0, top, w, top + bh))
    return crop


def write_gallery(root: Path, records, image_root: Path, crops: int, switch: float, occluded: float,
                  seed: int) -> list[int]:
    """A `partsearch ingest` gallery of one track per record; returns each track's identity, in
    the order (video, track) sorts."""
    rng = np.random.default_rng(seed)
    images = [Image.open(image_root / r.image).convert("RGB") for r in records]
    pids = [r.pid for r in records]
    by_video: dict[str, list[dict]] = {}
    identities = []
    for t, (image, pid) in enumerate(zip(images, pids)):
        video, track = f"clip{t // TRACKS_PER_VIDEO:03d}.avi", t % TRACKS_PER_VIDEO + 1
        identities.append(pid)
        folder = root / "crops" / video.replace(".", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(crops):
            source = image
            if rng.random() < switch:
                others = [i for i, p in enumerate(pids) if p != pid]
                source = images[int(rng.choice(others))]
            frame = 5 * n
            crop = folder / f"t{track:04d}_f{frame:06d}.jpg"
            jitter(source, rng, rng.random() < occluded).save(crop, quality=90)
            by_video.setdefault(video, []).append({
                "crop": crop.relative_to(root).as_posix(), "video": video, "frame": frame, "time": frame / 10,
                "box": [0, 0, image.width, image.height], "track": track, "score": 1.0})
    for video, lines in by_video.items():
        folder = root / "crops" / video.replace(".", "_")
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        (folder / "video.json").write_text(json.dumps({"format": "partsearch-ingest/1", "video": video}))
    return identities


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("track-search", "track-level search: R@1 of max vs mean-top3 on synthetic tracks")
    parser.add_argument("--run", default="runs/demo/run", help="a trained run (default: the demo's)")
    parser.add_argument("--split", default="test", help="the run's dataset split to make tracks from")
    parser.add_argument("--crops", type=positive, default=6, help="crops per track")
    parser.add_argument("--switch", type=float, nargs="+", default=[0.0, 0.15, 0.3],
                        help="probabilities that a crop shows another identity")
    parser.add_argument("--occluded", type=float, default=0.2, help="share of crops with a grey block")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from partsearch.data.formats import load_dataset
    from partsearch.eval.metrics import retrieval_metrics
    from partsearch.runs import load_run, run_data_path
    from partsearch.search.encoder import RunEncoder
    from partsearch.search.index import build_index
    from partsearch.search.searcher import Searcher
    from partsearch.search.tracks import AGGREGATES
    from partsearch.video.ingest import read_records

    run = load_run(args.run, "best", "cpu")
    splits = load_dataset(run.cfg.data.dataset, run_data_path(Path(args.run), run.cfg.data.root), verbose=False)
    records = splits.split(args.split)
    queries = [(caption, r.pid) for r in records for caption in r.captions]
    encoder = RunEncoder(None, device="cpu", run=run)
    log(f"{len(records)} tracks of {args.crops} crops from {len(set(r.pid for r in records))} identities, "
        f"{len(queries)} queries; switch rates {args.switch}, seeds {args.seeds}")
    work = Path(tempfile.mkdtemp(prefix="partsearch-tracks-bench-"))
    measured: dict[tuple[float, str], list[dict]] = {}
    try:
        for switch in args.switch:
            for seed in args.seeds:
                gallery, index = work / f"g-{switch}-{seed}", work / f"i-{switch}-{seed}"
                identities = write_gallery(gallery, records, splits.image_root, args.crops, switch, args.occluded, seed)
                build_index(encoder, gallery, index, progress=False, video_records=read_records(gallery))
                searcher = Searcher(index, encoder=encoder)
                keys = sorted(searcher.current().tracks)
                column = {key: t for t, key in enumerate(keys)}
                for method in AGGREGATES:
                    scores = np.full((len(queries), len(keys)), -np.inf, np.float32)
                    for q, (caption, _) in enumerate(queries):
                        for r in searcher.query_tracks(caption, len(keys), method).results:
                            scores[q, column[(r.video, r.track)]] = r.score
                    metrics = retrieval_metrics(torch.from_numpy(scores), torch.tensor([p for _, p in queries]),
                                                torch.tensor(identities))
                    measured.setdefault((switch, method), []).append(metrics)
                    log(f"switch {switch} seed {seed} {method}: R1 {metrics['R1']:.2f} mAP {metrics['mAP']:.2f}")
                shutil.rmtree(gallery)
                shutil.rmtree(index)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def spread(values: list[float]) -> str:
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"

    rows = [{"switch": switch, "aggregate": method,
             **{m: spread([x[m] for x in results]) for m in ("R1", "R5", "mAP")}}
            for (switch, method), results in measured.items()]
    report("track-search", rows, args, notes=[f"{len(records)} tracks of {args.crops} crops ({args.occluded:.0%} occluded) "
                                        f"from the {args.split} split of {args.run}, {len(queries)} queries, "
                                        f"seeds {args.seeds}"])
    return 0
