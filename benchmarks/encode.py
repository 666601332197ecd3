"""Inference throughput: gallery images/s (`encode_image`) and queries/s (`encode_text`).

Random inputs at the setting's image size and 77 tokens (lengths in [19, 77]); the model is in
eval mode under `torch.inference_mode`. On GPU: bf16 autocast and channels_last; timed with CUDA
events, no host sync between batches. On CPU: fp32, as `partsearch index` runs there.
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Any

import torch

from benchmarks.common import (
    NO_GPU_NOTE, SETTINGS, add_setting_arguments, base_parser, chosen_settings, cuda_time, log, positive,
    random_batch, report, resolve_device, set_threads, setting_config, wall_and_cpu,
)


def measure(setting: str, device: torch.device, *, image_batch: int, text_batch: int, repeats: int,
            overrides: list[str] | None = None) -> dict[str, Any]:
    from partsearch.model.model import build_model

    cuda = device.type == "cuda"
    cfg = setting_config(setting, overrides)
    vocab = SETTINGS[setting]["vocab"]
    model = build_model(cfg, vocab).to(device).eval()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    images = random_batch(image_batch, tuple(cfg.data.image_size), 2, vocab, device)["images"]
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    text = random_batch(text_batch, (2, 2), cfg.data.max_tokens, vocab, device, seed=1)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def gallery():
        with torch.inference_mode(), autocast():
            return model.encode_image(images)

    def queries():
        with torch.inference_mode(), autocast():
            return model.encode_text(text["ids"], text["mask"])

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
           "precision": "bf16 autocast" if cuda else "fp32", "image_batch": image_batch,
           "gallery_images_s": image_batch / image_s, "text_batch": text_batch, "queries_s": text_batch / text_s,
           "cpu_share_pct": 100 * min(shares) if shares else None}
    log(f"{setting}: {row['gallery_images_s']:.1f} gallery images/s, {row['queries_s']:.1f} queries/s")
    return row


def gpu_rows(setting: str, repeats: int) -> list[dict[str, Any]]:
    row = measure(setting, torch.device("cuda"), image_batch=512, text_batch=1024, repeats=repeats)
    torch.cuda.empty_cache()
    return [{"part": "encode", "setting": f"{setting} gallery (batch 512)", "images_s": row["gallery_images_s"]},
            {"part": "encode", "setting": f"{setting} queries (batch 1024)", "images_s": row["queries_s"],
             "note": "queries/s"}]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("encode", "gallery images/s and queries/s at inference")
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
