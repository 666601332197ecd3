"""Inference throughput: gallery images/s and queries/s, through the code evaluation runs.

The model is a shipped config's (random weights) in eval mode, and the timed calls are
`partsearch.eval.evaluate.embed_gallery` / `embed_queries`, the functions `partsearch eval` and
the trainer's model selection use: the config's precision rule (`train.precision`: bf16 autocast
on GPU, fp32 on CPU), `torch.inference_mode`, float32 embeddings out. Random inputs at the config's
image size and `data.max_tokens` tokens (lengths in [L/4, L]), already on the device (image
decoding and the copy are not timed). On GPU, timed with CUDA events.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from benchmarks.common import (
    NO_GPU_NOTE, SETTINGS, add_setting_arguments, base_parser, chosen_settings, cuda_time, log, positive,
    precision_label, random_batch, report, resolve_device, set_threads, setting_config, wall_and_cpu,
)


def measure(setting: str, device: torch.device, *, image_batch: int, text_batch: int, repeats: int,
            overrides: list[str] | None = None) -> dict[str, Any]:
    from partsearch.eval.evaluate import embed_gallery, embed_queries
    from partsearch.model.model import build_model

    cuda = device.type == "cuda"
    cfg = setting_config(setting, overrides)
    vocab = SETTINGS[setting]["vocab"]
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, vocab).to(device).eval()
    images = [random_batch(image_batch, tuple(cfg.data.image_size), 2, vocab, device)]
    texts = [random_batch(text_batch, (2, 2), cfg.data.max_tokens, vocab, device, seed=1)]

    def gallery():
        return embed_gallery(model, images, device, cfg, progress=False)

    def queries():
        return embed_queries(model, texts, device, cfg, progress=False)

    shares = []

    def timer(fn):
        if cuda:
            return cuda_time(fn, repeats, warmup=3, inner=5)[0]
        wall, cpu = wall_and_cpu(fn, repeats)
        shares.append(statistics.median(c / w for c, w in zip(cpu, wall)) / torch.get_num_threads())
        return statistics.median(wall)

    image_s = timer(gallery)
    text_s = timer(queries)
    row = {"setting": setting, "device": device.type, "image_size": "x".join(map(str, cfg.data.image_size)),
           "precision": precision_label(cfg, device), "image_batch": image_batch,
           "gallery_images_s": image_batch / image_s, "text_batch": text_batch, "tokens": cfg.data.max_tokens,
           "queries_s": text_batch / text_s, "cpu_share_pct": 100 * min(shares) if shares else None}
    log(f"{setting}: {row['gallery_images_s']:.1f} gallery images/s, {row['queries_s']:.1f} queries/s")
    return row


def gpu_rows(setting: str, repeats: int, device: torch.device | None = None, image_batch: int = 512,
             text_batch: int = 1024, overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Two rows of the gpu.sh table (`device` cpu: gpu.sh's CPU check, with smaller batches)."""
    device = device or torch.device("cuda")
    row = measure(setting, device, image_batch=image_batch, text_batch=text_batch, repeats=repeats,
                  overrides=overrides)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return [{"part": "encode", "setting": f"{setting} gallery (batch {image_batch})", "images_s": row["gallery_images_s"],
             "note": row["precision"]},
            {"part": "encode", "setting": f"{setting} queries (batch {text_batch})", "images_s": row["queries_s"],
             "note": f"queries/s, {row['tokens']} tokens"}]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("encode", "gallery images/s and queries/s at inference (the evaluation's code)")
    add_setting_arguments(parser)
    parser.add_argument("--image-batch", type=positive, default=None, help="default 64 on CPU, 512 on GPU")
    parser.add_argument("--text-batch", type=positive, default=None, help="default 128 on CPU, 1024 on GPU")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    names = chosen_settings(parser, args, device)
    rows = [measure(n, device, image_batch=args.image_batch or (512 if cuda else 64),
                    text_batch=args.text_batch or (1024 if cuda else 128), repeats=args.repeats,
                    overrides=args.override) for n in names]
    notes = [] if cuda else [NO_GPU_NOTE]
    report("encode", rows, args, notes)
    return 0
