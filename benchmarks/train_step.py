"""Training-step throughput: images/s (= image-caption pairs/s), peak memory and MFU.

One step = model forward (both modalities) + PartSearchCriterion + backward + optimizer step,
the work the trainer does per batch, on random tensors (data loading is not measured). FLOPs per
step are counted once with `torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions,
forward and backward); MFU = those FLOPs / step time / the card's MEASURED bf16 matmul rate.

On GPU: bf16 autocast, optional `torch.compile` of forward + loss, fused Adam, and no host sync
inside the timed loop (steps are timed with CUDA events; losses are never read back). On CPU:
fp32, as the trainer runs there.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from typing import Any

import torch

from benchmarks.common import (
    NO_GPU_NOTE, SETTINGS, add_setting_arguments, base_parser, chosen_settings, cuda_time, log, peak_rss_mib,
    positive, random_batch, report, resolve_device, set_threads, setting_config, wall_and_cpu,
)


def build(setting: str, device: torch.device, overrides: list[str] | None = None, batch: int | None = None,
          fused: bool = False):
    """(cfg, model, criterion, optimizer, batch tensors) for a named setting."""
    from partsearch.losses.criterion import PartSearchCriterion
    from partsearch.model.model import build_model
    from partsearch.train.optim import build_optimizer

    cfg = setting_config(setting, overrides)
    spec = SETTINGS[setting]
    model = build_model(cfg, spec["vocab"]).to(device).train()
    m = cfg.model
    criterion = PartSearchCriterion(cfg.loss, spec["classes"], m.dim, m.num_coarse, m.num_fine).to(device)
    optimizer = build_optimizer(cfg.train, model, criterion)
    if fused:
        # The same groups and hyper-parameters, with the single-kernel (fused) CUDA update.
        groups = [{k: g[k] for k in ("params", "lr", "weight_decay")} for g in optimizer.param_groups]
        optimizer = type(optimizer)(groups, lr=cfg.train.lr, fused=True)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    tensors = random_batch(batch or cfg.data.batch_size, tuple(cfg.data.image_size), cfg.data.max_tokens,
                           spec["vocab"], device)
    if device.type == "cuda":
        tensors["images"] = tensors["images"].contiguous(memory_format=torch.channels_last)
    return cfg, model, criterion, optimizer, tensors


def make_step(model, criterion, optimizer, tensors, bf16: bool, compile_: bool):
    def loss_fn(images, ids, mask, labels):
        image_emb, text_emb = model(images, ids, mask)
        return sum(criterion(image_emb, text_emb, labels).values())

    forward = torch.compile(loss_fn) if compile_ else loss_fn
    autocast = (lambda: torch.autocast(tensors["images"].device.type, dtype=torch.bfloat16)) if bf16 \
        else contextlib.nullcontext

    def step():
        with autocast():
            loss = forward(tensors["images"], tensors["ids"], tensors["mask"], tensors["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def count_flops(step) -> int:
    """FLOPs of one whole step (forward + backward; the optimizer's elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def measure(setting: str, device: torch.device, *, batch: int | None, steps: int, repeats: int,
            compile_: bool = False, fused: bool = False, overrides: list[str] | None = None,
            peak_tflops: float | None = None) -> dict[str, Any]:
    cuda = device.type == "cuda"
    cfg, model, criterion, optimizer, tensors = build(setting, device, overrides, batch, fused and cuda)
    batch = tensors["images"].shape[0]
    flops = count_flops(make_step(model, criterion, optimizer, tensors, cuda, False))
    step = make_step(model, criterion, optimizer, tensors, cuda, compile_)
    cpu_share = None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        seconds, _ = cuda_time(step, repeats, warmup=3, inner=steps)
        peak_mem = torch.cuda.max_memory_allocated() / 2**30
    else:
        wall, cpu = wall_and_cpu(step, repeats, warmup=1)
        seconds = statistics.median(wall)
        cpu_share = 100 * statistics.median(c / w for c, w in zip(cpu, wall)) / torch.get_num_threads()
        peak_mem = peak_rss_mib() / 1024
    row = {
        "setting": setting, "device": device.type, "batch": batch,
        "image_size": "x".join(map(str, cfg.data.image_size)), "precision": "bf16 autocast" if cuda else "fp32",
        "compile": compile_, "fused_adam": fused and cuda, "step_ms": seconds * 1000, "images_s": batch / seconds,
        "gflops_per_image": flops / batch / 1e9, "tflops": flops / seconds / 1e12,
        "mfu_pct": 100 * flops / seconds / 1e12 / peak_tflops if peak_tflops else None,
        "peak_mem_gib": peak_mem,
        "memory": "torch.cuda.max_memory_allocated" if cuda else "process peak RSS",
        "cpu_share_pct": cpu_share,
    }
    log(f"{setting} {'compiled' if compile_ else 'eager'}: {row['images_s']:.1f} images/s")
    return row


def gpu_rows(setting: str, compile_: bool, fused: bool, steps: int, repeats: int, peak_tflops: float | None):
    """One gpu.sh table row."""
    row = measure(setting, torch.device("cuda"), batch=None, steps=steps, repeats=repeats, compile_=compile_,
                  fused=fused, peak_tflops=peak_tflops)
    torch.cuda.empty_cache()
    return [{"part": "train-step", "setting": f"{setting} b{row['batch']} {'compile' if compile_ else 'eager'}",
             "images_s": row["images_s"], "tflops": row["tflops"], "mfu_pct": row["mfu_pct"],
             "peak_mem_gib": row["peak_mem_gib"], "note": f"{row['gflops_per_image']:.0f} GFLOP/image, fused Adam"}]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("train-step", "images/s, peak memory and MFU of one training step")
    add_setting_arguments(parser)
    parser.add_argument("--batch", type=positive, default=None, help="default: the setting's data.batch_size")
    parser.add_argument("--steps", type=positive, default=10, help="steps per timed repeat on GPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile forward + loss")
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True, help="fused Adam (GPU)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="bf16 matmul ceiling for MFU (default on GPU: measured now)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    names = chosen_settings(parser, args, device)
    notes = [] if device.type == "cuda" else [NO_GPU_NOTE]
    peak = args.peak_tflops
    if device.type == "cuda" and peak is None:
        from benchmarks.gpu_bench import matmul_tflops

        peak = matmul_tflops()
        notes.append(f"measured bf16 matmul ceiling: {peak:.0f} TFLOP/s")
    rows = [measure(n, device, batch=args.batch, steps=args.steps, repeats=args.repeats, compile_=args.compile,
                    fused=args.fused, overrides=args.override, peak_tflops=peak) for n in names]
    report("train-step", rows, args, notes)
    return 0
