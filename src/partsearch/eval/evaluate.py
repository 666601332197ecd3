"""Evaluation of a model on a split: embed the gallery images and the query captions, score every
caption against every image, and report R@1/5/10, mAP and mINP (`metrics.retrieval_metrics`).

Protocol (METHOD.md): text-to-image, identity-level, queries = every caption of the split,
gallery = every image of the split. Also reported [ours]: image-to-text (each image queries the
captions, identity-level) and text-to-image at each similarity level -- global only, global +
coarse, and all levels with the configured weights -- so the table shows what each level adds.

Scores use the folded form of `partsearch.model.similarity` (`fold_query` . `fold_gallery`,
equal to `similarity(image_emb, text_emb, weights)` by construction), which builds one `(Q, G)`
matrix per setting instead of one per level; the training engine's model selection
(`Evaluator`) and `partsearch eval` run this same code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from partsearch.config import Config
from partsearch.data.datasets import build_gallery_loader, build_query_loader
from partsearch.data.formats import Record
from partsearch.device import autocast
from partsearch.errors import DataError
from partsearch.files import write_text_atomic
from partsearch.eval.metrics import retrieval_metrics
from partsearch.model.backbones import build_image_transform
from partsearch.model.model import Embeddings
from partsearch.model.similarity import fold_gallery, fold_query
from partsearch.progress import tqdm

Weights = tuple[float, float, float]
COLUMNS = ("R1", "R5", "R10", "mAP", "mINP")


def level_weights(cfg: Config) -> dict[str, Weights]:
    """The t2i settings of the level table: global only, global + coarse, and the configured mix."""
    return {"global": (1.0, 0.0, 0.0), "global+coarse": (1.0, 1.0, 0.0), "all": tuple(cfg.model.similarity_weights)}


def _float(emb: Embeddings) -> Embeddings:
    """float32, without the foreground map (not needed for scores, large for a big gallery)."""
    return Embeddings(emb.global_.float(), emb.coarse.float(), emb.fine.float())


def _show_progress() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


@torch.inference_mode()
def embed_gallery(
    model: nn.Module, loader, device: torch.device, cfg: Config | None = None, progress: bool = True
) -> Embeddings:
    """Image embeddings of every gallery item, in loader order, on `device` (float32)."""
    parts = []
    with autocast(device, (cfg or Config()).train.precision):
        for batch in tqdm(loader, desc="gallery", unit="batch", leave=False, disable=not progress):
            parts.append(_float(model.encode_image(batch["image"].to(device, non_blocking=True))))
    return Embeddings.cat(parts)


@torch.inference_mode()
def embed_queries(
    model: nn.Module, loader, device: torch.device, cfg: Config | None = None, progress: bool = True
) -> Embeddings:
    """Text embeddings of every query caption, in loader order, on `device` (float32)."""
    parts = []
    with autocast(device, (cfg or Config()).train.precision):
        for batch in tqdm(loader, desc="queries", unit="batch", leave=False, disable=not progress):
            ids = batch["ids"].to(device, non_blocking=True)
            mask = batch["mask"].to(device, non_blocking=True)
            parts.append(_float(model.encode_text(ids, mask)))
    return Embeddings.cat(parts)


@torch.inference_mode()
def score_embeddings(
    image_emb: Embeddings,
    text_emb: Embeddings,
    image_ids: torch.Tensor,
    text_ids: torch.Tensor,
    cfg: Config,
) -> dict[str, Any]:
    """The evaluation dict (`partsearch eval --json` shape) of embeddings with identities.

    `image_emb` `(G, ...)` with `image_ids` `(G,)`; `text_emb` `(Q, ...)` with `text_ids` `(Q,)`.
    One similarity matrix exists at a time.
    """
    budget = cfg.eval.memory_budget_mb
    gallery = fold_gallery(image_emb)
    levels = {}
    for name, weights in level_weights(cfg).items():
        similarity = fold_query(text_emb, weights) @ gallery.T
        levels[name] = retrieval_metrics(similarity, text_ids, image_ids, memory_budget_mb=budget)
        del similarity
    # Image-to-text: the same s(v, t), with images as queries and captions as the gallery.
    similarity = gallery @ fold_query(text_emb, level_weights(cfg)["all"]).T
    i2t = retrieval_metrics(similarity, image_ids, text_ids, memory_budget_mb=budget)
    del similarity
    return {"t2i": levels["all"], "i2t": i2t, "levels": levels, "weights": list(level_weights(cfg)["all"]),
            "queries": len(text_ids), "gallery": len(image_ids)}


def evaluate_model(
    model: nn.Module,
    tokenizer,
    cfg: Config,
    records: list[Record],
    image_root: str | Path,
    device: torch.device | str,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `model` on the images and captions of `records` (one split).

    Returns `{"t2i": {R1, R5, R10, mAP, mINP}, "i2t": {...}, "levels": {"global", "global+coarse",
    "all"}: {...}, "queries": Q, "gallery": G}`, values in percent.
    """
    device = torch.device(device)
    image_emb, text_emb = embed_split(model, tokenizer, cfg, records, image_root, device, progress)
    image_ids = torch.tensor([r.pid for r in records], device=device)
    text_ids = torch.tensor([r.pid for r in records for _ in r.captions], device=device)
    return score_embeddings(image_emb, text_emb, image_ids, text_ids, cfg)


def embed_split(
    model: nn.Module,
    tokenizer,
    cfg: Config,
    records: list[Record],
    image_root: str | Path,
    device: torch.device | str,
    progress: bool = True,
) -> tuple[Embeddings, Embeddings]:
    """The gallery embeddings of the images of `records` and the query embeddings of their
    captions, in record order (the model in eval mode, its mode restored after)."""
    device = torch.device(device)
    if not records:
        raise DataError("the evaluation split has no records")
    was_training = model.training
    model.eval()
    try:
        gallery_loader = build_gallery_loader(cfg, records, image_root, build_image_transform(cfg.model, cfg.data, train=False),
                                              cfg.eval.batch_size)
        query_loader = build_query_loader(cfg, records, tokenizer, cfg.eval.batch_size)
        return embed_gallery(model, gallery_loader, device, cfg, progress), embed_queries(model, query_loader, device, cfg, progress)
    finally:
        model.train(was_training)


class Evaluator:
    """The training engine's model-selection callback: `evaluator(model, split) -> dict`, the
    same evaluation as `partsearch eval` on the model's device."""

    def __init__(self, cfg: Config, splits, tokenizer) -> None:
        self.cfg = cfg
        self.splits = splits
        self.tokenizer = tokenizer

    def __call__(self, model: nn.Module, split: str) -> dict[str, Any]:
        device = next(model.parameters()).device
        records = self.splits.split(split)
        return evaluate_model(
            model, self.tokenizer, self.cfg, records, self.splits.image_root, device, progress=_show_progress()
        )


def format_table(results: dict[str, Any]) -> str:
    """One table: rows t2i, i2t and the t2i level rows; columns R1 R5 R10 mAP mINP (percent)."""
    rows = [("t2i", results["t2i"]), ("i2t", results["i2t"])]
    weights = results.get("weights")
    label = {"all": f"all {_weights_label(weights)}"} if weights else {}
    rows += [(f"t2i {label.get(name, name)}", values) for name, values in results["levels"].items()]
    width = max(len(name) for name, _ in rows)
    lines = [" " * width + "".join(f"{c:>8}" for c in COLUMNS)]
    lines += [f"{name:<{width}}" + "".join(f"{values[c]:8.2f}" for c in COLUMNS) for name, values in rows]
    return "\n".join(lines)


def _weights_label(weights) -> str:
    """'(1, 0.5, 0.25)': the (global, coarse, fine) weights of the all-levels row."""
    return "(" + ", ".join(f"{w:g}" for w in weights) + ")"


def write_json(path: str | Path, results: dict[str, Any]) -> None:
    """Write `results` as JSON atomically (temporary file + rename)."""
    write_text_atomic(path, json.dumps(results, indent=2) + "\n")


def load_split(cfg: Config, split: str, data_root: str | None = None, run_dir: str | Path | None = None):
    """(the dataset's splits, the records of `split`) for a run's config; a relative data path in
    the config of `run_dir` is read relative to the run. DataError naming the fix when the dataset
    moved or has no such split."""
    from partsearch.data.formats import load_dataset
    from partsearch.runs import run_data_path

    root = data_root or (run_data_path(run_dir, cfg.data.root) if run_dir is not None else cfg.data.root)
    jsonl_file = run_data_path(run_dir, cfg.data.jsonl_file) if run_dir is not None else cfg.data.jsonl_file
    try:
        splits = load_dataset(cfg.data.dataset, root, jsonl_file=jsonl_file or None)
    except DataError as err:
        hint = "" if data_root else "; if the dataset moved since training, pass --data-root DIR"
        raise DataError(f"{err}{hint}") from None
    if getattr(splits, split) is None:
        raise DataError(f"{splits.name} has no {split} split; evaluate with --split test")
    return splits, splits.split(split)
