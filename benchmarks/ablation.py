"""Loss ablation on SynthPEDES: global-only, +coarse, +fine with a fixed margin, full (CMR).

Every variant trains with the same data, model, seed set and budget (epochs); only the loss terms
(and which levels the similarity uses) differ:

| variant      | loss terms                                       | similarity (w_g, w_c, w_f) |
|--------------|--------------------------------------------------|----------------------------|
| global       | L_ID(g) + L_R(g)                                 | (1, 0, 0)                  |
| coarse       | + L_ID(C) + L_R(C)                               | (1, 1, 0)                  |
| fine_fixed   | + L_ID(F) + L_CMR(F) with `commonality: none`    | (1, 1, 1)                  |
| full         | + L_ID(F) + L_CMR(F) with `commonality: soft_rank` | (1, 1, 1)                |
| full_weighted | + L_ID(F) + L_CMR(F) with `commonality: weighted` [ours] | (1, 1, 1)          |

A level that no loss trains is left out of the similarity: its embeddings are untrained noise.
The part-forming terms [ours] (token diversity and attention overlap, METHOD.md) follow the
levels: off for `global`, the part correspondence (`loss.part_match`) on the coarse level only for
`coarse`; the part-level InfoNCE (`loss.infonce_fine`, when the base config sets
it) is on in both fine variants. The last checkpoint of each run is evaluated on the test split
(no model selection, so no val split is involved), and its part diagnostics (`partsearch parts`)
are computed there too, with the CMR margin the trained model would apply on the test split by
commonality quantile. The table gives mean and sample standard deviation over seeds.

    python -m benchmarks.ablation --seeds 0 1 [--ids 200] [--epochs 8] [--json OUT] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

VARIANTS = {
    "global": ["loss.id_coarse=0", "loss.rank_coarse=0", "loss.id_fine=0", "loss.cmr=0", "loss.infonce_fine=0",
               "loss.diversity=0", "loss.attention_overlap=0", "loss.part_match=0", "model.similarity_weights=[1, 0, 0]"],
    "coarse": ["loss.id_fine=0", "loss.cmr=0", "loss.infonce_fine=0", "loss.part_match_levels=[coarse]",
               "model.similarity_weights=[1, 1, 0]"],
    "fine_fixed": ["loss.commonality=none"],
    "full": ["loss.commonality=soft_rank"],
    "full_weighted": ["loss.commonality=weighted"],
}
METRICS = ("R1", "R5", "R10", "mAP")

# A model small enough for 2 CPU cores: a from-scratch ResNet-10 and a 2-layer BERT at 64x32.
BASE = [
    "data.dataset=SynthPEDES", "data.image_size=[64, 32]", "data.batch_size=32", "data.instances_per_id=2",
    "data.num_workers=0", "data.max_tokens=48",
    "model.image_backbone=small_cnn", "model.image_width=64", "model.text_backbone=bert",
    "model.text_weights=random", "model.text_width=128", "model.text_layers=2", "model.dim=128",
    "model.encoder_heads=4", "model.decoder_heads=4",
    "train.lr=1e-3", "train.backbone_lr_factor=1.0", "train.warmup_epochs=1", "train.log_every=10",
    "train.device=cpu", "eval.batch_size=64",
    # the part settings of configs/synth_cpu.yaml (METHOD.md, "Making the parts form", items 7-8)
    "model.fine_foreground=false", "loss.diversity=2.0",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--ids", type=int, default=200, help="SynthPEDES identities (generated if absent)")
    parser.add_argument("--data", default="runs/ablation/synth", help="SynthPEDES directory")
    parser.add_argument("--epochs", type=int, default=8, help="training budget per run (equal for all)")
    parser.add_argument("--out", default="runs/ablation", help="directory for the runs")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate runs already trained to the budget instead of training them again")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every variant")
    return parser.parse_args(argv)


def summarise(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """{variant: {metric: {"mean", "std"}}} over seeds (std = sample std, 0 for one seed)."""
    out = {}
    for variant, runs in results.items():
        out[variant] = {}
        for m in METRICS:
            values = [r[m] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            out[variant][m] = {"mean": statistics.fmean(values), "std": std}
    return out


def format_table(summary: dict, results: dict) -> str:
    lines = [f"{'variant':<14}" + "".join(f"{m:>16}" for m in METRICS) + "   per seed R1"]
    for variant, stats in summary.items():
        cells = "".join(f"{stats[m]['mean']:9.2f} ± {stats[m]['std']:4.2f}" for m in METRICS)
        seeds = ", ".join(f"{r['R1']:.2f}" for r in results[variant])
        lines.append(f"{variant:<14}{cells}   {seeds}")
    return "\n".join(lines)


def part_columns(run, splits) -> dict[str, float]:
    """The part diagnostics of a trained run on the test split, flattened to columns: token
    cosines, diagonal margins, foreground contrast, per attribute the best stripe's AUC over all
    pairs and over pairs whose anchor wears the attribute's most common value, and the CMR margin
    at the 10/50/90% quantiles of the commonality, computed on the test split's matched pairs."""
    from collections import Counter

    import numpy as np
    import torch

    from partsearch.eval.parts import ATTRIBUTES, _encode, _sample_pairs, diagnose, summary, token_aucs
    from partsearch.losses.cmr import cmr_margin, commonality
    from partsearch.model.similarity import token_cosines

    records = splits.test
    diag = diagnose(run.model, run.cfg, records, splits.image_root, run.tokenizer, "cpu")
    s = summary(diag)
    out = {k: float(s[k]) for k in ("coarse_token_cos", "fine_text_token_cos", "coarse_margin", "fine_margin",
                                    "foreground_contrast") if k in s}
    for attr, best in s.get("attribute_stripes", {}).items():
        out[f"auc_{attr}"] = best["auc"]
    img, txt = _encode(run.model, run.cfg, records, splits.image_root, torch.device("cpu"), run.tokenizer)
    attrs = [r.attributes for r in records]
    pids = np.array([r.pid for r in records])
    for attr in ATTRIBUTES:
        common = Counter(a["person"].get(attr) for a in attrs if attr in a["visible"]).most_common(1)
        if not common:
            continue
        keep = np.array([a["person"].get(attr) == common[0][0] and attr in a["visible"] for a in attrs])
        if keep.sum() < 2:
            continue
        anchors = np.nonzero(keep)[0]
        i, j = _sample_pairs(pids[anchors], pids, 20000, 0)
        i = anchors[i]
        valid = np.array([attr in attrs[b]["visible"] for b in j], bool)
        same = np.array([attrs[b]["person"].get(attr) == common[0][0] for b in j])
        aucs = token_aucs(img["fine"][i[valid]], img["fine"][j[valid]], same[valid])
        out[f"auc_common_{attr}"] = float(np.nanmax(aucs))
    first_caption = np.cumsum([0] + [len(r.captions) for r in records[:-1]])
    sim = token_cosines(torch.nn.functional.normalize(txt["fine"][first_caption], dim=-1),
                        torch.nn.functional.normalize(img["fine"], dim=-1)).transpose(0, 1)  # anchors = images
    c = commonality(sim, torch.tensor(pids), run.cfg.loss.cmr_delta, run.cfg.loss.cmr_temperature).flatten()
    for q in (0.1, 0.5, 0.9):
        c_q = torch.quantile(c, q)
        out[f"commonality_q{int(q * 100)}"] = float(c_q)
        out[f"margin_at_c_q{int(q * 100)}"] = float(cmr_margin(c_q, run.cfg.loss.cmr_alpha, run.cfg.loss.cmr_min_margin))
    return out


def hinge_gaps(run, splits, batches: int = 30, ids_per_batch: int = 16, seed: int = 0) -> dict[str, float]:
    """How many ranking hinges a margin could switch off: the gap s(a, a+) - s(a, n*) to the
    hardest negative over `batches` training-like batches of the train split (`ids_per_batch`
    identities x 2 images, one caption each, both directions), at the global and the fine level:
    its 10/50/90% quantiles and the share of gaps above 0.05 and 0.2 (METHOD.md, Losses 3: with the
    hardest negative, an active hinge's gradient does not depend on its margin)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from partsearch.data.datasets import build_gallery_loader, build_query_loader
    from partsearch.model.backbones import build_image_transform
    from partsearch.model.similarity import global_cosines, token_cosines

    records = splits.train
    model, cfg = run.model.eval(), run.cfg
    image, text = {"global": [], "fine": []}, {"global": [], "fine": []}
    with torch.no_grad():
        transform = build_image_transform(cfg.model, cfg.data, train=False)
        for batch in build_gallery_loader(cfg, records, splits.image_root, transform, cfg.eval.batch_size):
            emb = model.encode_image(batch["image"])
            image["global"].append(emb.global_)
            image["fine"].append(emb.fine)
        first = set(np.cumsum([0] + [len(r.captions) for r in records[:-1]]).tolist())
        for batch in build_query_loader(cfg, records, run.tokenizer, cfg.eval.batch_size):
            emb = model.encode_text(batch["ids"], batch["mask"])
            text["global"].append(emb.global_)
            text["fine"].append(emb.fine)
    image = {k: F.normalize(torch.cat(v).float(), dim=-1) for k, v in image.items()}
    keep = torch.tensor(sorted(first))
    text = {k: F.normalize(torch.cat(v).float(), dim=-1)[keep] for k, v in text.items()}
    pids = np.array([r.pid for r in records])
    rng = np.random.default_rng(seed)
    gaps: dict[str, list[torch.Tensor]] = {"global": [], "fine": []}
    for _ in range(batches):
        chosen = rng.choice(np.unique(pids), min(ids_per_batch, len(np.unique(pids))), replace=False)
        idx = np.concatenate([rng.choice(np.nonzero(pids == i)[0], min(2, int((pids == i).sum())), replace=False)
                              for i in chosen])
        labels = torch.tensor(pids[idx])
        valid = labels[:, None] != labels[None, :]
        sims = {"global": global_cosines(text["global"][idx], image["global"][idx])[..., None],
                "fine": token_cosines(text["fine"][idx], image["fine"][idx])}
        for level, sim in sims.items():
            for s in (sim.transpose(0, 1), sim):
                positive = torch.diagonal(s, dim1=0, dim2=1).t()
                hardest = s.masked_fill(~valid[:, :, None], -2.0).amax(dim=1)
                gaps[level].append((positive - hardest).flatten())
    out = {}
    for level, values in gaps.items():
        g = torch.cat(values).numpy()
        for q in (10, 50, 90):
            out[f"gap_{level}_q{q}"] = float(np.quantile(g, q / 100))
        out[f"gap_{level}_above_0.05"] = float((g > 0.05).mean())
        out[f"gap_{level}_above_0.2"] = float((g > 0.2).mean())
    return out


PART_COLUMNS = ("coarse_token_cos", "coarse_margin", "fine_margin", "foreground_contrast", "auc_hair_color",
                "auc_upper_color", "auc_lower_color", "auc_shoe_color", "auc_common_lower_color",
                "margin_at_c_q10", "margin_at_c_q50", "margin_at_c_q90")


def format_parts(results: dict) -> str:
    """Mean over seeds of the part columns, one row per variant."""
    lines = [f"{'variant':<14}" + "".join(f"{c[-12:]:>13}" for c in PART_COLUMNS)]
    for variant, runs in results.items():
        cells = []
        for c in PART_COLUMNS:
            values = [r["parts"][c] for r in runs if c in r.get("parts", {})]
            cells.append(f"{statistics.fmean(values):13.3f}" if values else f"{'-':>13}")
        lines.append(f"{variant:<14}" + "".join(cells))
    return "\n".join(lines)


def format_gaps(results: dict) -> str:
    """Mean over seeds of the share of hinges a margin could switch off (`hinge_gaps`)."""
    columns = ("gap_global_q50", "gap_global_above_0.05", "gap_fine_q50", "gap_fine_above_0.05", "gap_fine_above_0.2")
    lines = [f"{'variant':<14}" + "".join(f"{c[4:]:>20}" for c in columns)]
    for variant, runs in results.items():
        lines.append(f"{variant:<14}" + "".join(
            f"{statistics.fmean(r['hinge_gaps'][c] for r in runs):20.3f}" for c in columns))
    return "\n".join(lines)


def _finished(run_dir: Path, epochs: int) -> bool:
    from partsearch.errors import CheckpointError
    from partsearch.runs import load_checkpoint

    try:
        return load_checkpoint(run_dir / "last.pt")["epoch"] >= epochs
    except CheckpointError:
        return False


def _last_stats(run_dir: Path) -> dict[str, float]:
    """The last logged training loss and CMR margin/commonality of a run (for the diagnosis)."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "loss" in r]
    if not train_lines:
        return {}
    keys = ("loss", "rank_global", "cmr", "cmr_margin", "cmr_commonality")
    return {k: float(train_lines[-1][k]) for k in keys if k in train_lines[-1]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from partsearch.config import load_config
    from partsearch.data.formats import load_dataset
    from partsearch.data.synth import generate
    from partsearch.model.backbones import build_tokenizer
    from partsearch.eval.evaluate import Evaluator
    from partsearch.runs import load_run
    from partsearch.train.engine import train

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not (data / "reid_raw.json").is_file():
        generate(data, num_ids=args.ids, seed=0, size=(128, 64), progress=True)
    splits = load_dataset("SynthPEDES", data)
    common = [*BASE, f"data.root={data}", f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}",
              *args.overrides]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    started = time.perf_counter()
    for seed in args.seeds:
        for variant in args.variants:
            cfg = load_config(None, [*common, *VARIANTS[variant], f"train.seed={seed}"])
            run_dir = Path(args.out) / f"{variant}_seed{seed}"
            tokenizer = build_tokenizer(cfg.model, cfg.data.max_tokens)
            t0 = time.perf_counter()
            if not (args.reuse and _finished(run_dir, args.epochs)):
                train(cfg, run_dir, splits=splits, tokenizer=tokenizer)
            run = load_run(run_dir, "last")
            evaluation = Evaluator(run.cfg, splits, run.tokenizer)(run.model, "test")
            metrics = evaluation["t2i"]
            entry = {m: float(metrics[m]) for m in METRICS}
            entry["levels_R1"] = {k: float(v["R1"]) for k, v in evaluation.get("levels", {}).items()}
            entry.update(_last_stats(run_dir))
            entry["parts"] = part_columns(run, splits)
            entry["hinge_gaps"] = hinge_gaps(run, splits)
            results[variant].append(entry)
            print(f"{variant} seed {seed}: R1 {metrics['R1']:.2f} R5 {metrics['R5']:.2f} "
                  f"R10 {metrics['R10']:.2f} mAP {metrics['mAP']:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = summarise(results)
    stats = splits.stats()
    print(f"\nSynthPEDES {args.ids} ids (test: {stats['test']['ids']} ids, {stats['test']['images']} images, "
          f"{stats['test']['captions']} queries); {args.epochs} epochs per run; seeds {args.seeds}; "
          f"{time.perf_counter() - started:.0f} s in all on {platform.processor() or platform.machine()} "
          f"({os.cpu_count()} cores)")
    print(format_table(summary, results))
    print(format_parts(results))
    print(format_gaps(results))
    if args.json:
        payload = {"args": {k: v for k, v in vars(args).items()}, "config": common, "variants": VARIANTS,
                   "results": results, "summary": summary, "test_split": stats["test"]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
