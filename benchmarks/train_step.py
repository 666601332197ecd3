"""Training-step throughput: images/s (= image-caption pairs/s), peak memory and MFU.

The step is the trainer's own (`partsearch.train.step`): `build_parts` makes the model,
criterion and optimizer of a shipped config (random weights), and `Stepper` runs what
`partsearch train` runs per batch: inputs into the trainer's layout, forward under the config's
precision, the criterion, the deferred finite check, backward, clipping, the optimizer and the
schedule, with the config's speed switches (`train.channels_last`, `train.fused_optimizer`,
`train.compile`, `train.nan_check_every`; change them with `--override`). Not timed: data
loading and the host-to-device copy (the loader's pinned, non-blocking copy overlaps the step).

FLOPs per step are counted once, on an eager step, with `torch.utils.flop_counter.FlopCounterMode`
(matmuls, convolutions, attention; forward and backward); MFU = those FLOPs / step time / the card's
MEASURED bf16 matmul rate. On GPU the steps of a repeat run back to back, timed with CUDA events.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import torch

from benchmarks.common import (
    NO_GPU_NOTE, SETTINGS, add_setting_arguments, base_parser, chosen_settings, cuda_time, log, peak_rss_mib,
    positive, precision_label, random_batch, report, resolve_device, set_threads, setting_config,
    wall_and_cpu,
)


def build(setting: str, device: torch.device, overrides: list[str] | None = None, classes: int | None = None):
    """(cfg, model, stepper, batch) of a named setting: the trainer's parts and a random batch;
    `classes` replaces the setting's number of identities (gpu.sh's CPU check)."""
    from partsearch.train.optim import build_scheduler
    from partsearch.train.step import Stepper, build_parts

    cfg = setting_config(setting, overrides)
    spec = SETTINGS[setting]
    torch.manual_seed(cfg.train.seed)
    model, criterion, optimizer = build_parts(cfg, classes or spec["classes"], spec["vocab"], device)
    model.train()
    criterion.train()
    scheduler = build_scheduler(cfg.train, optimizer, steps_per_epoch=100)
    stepper = Stepper(cfg, model, criterion, optimizer, scheduler, device)
    batch = random_batch(cfg.data.batch_size, tuple(cfg.data.image_size), cfg.data.max_tokens, spec["vocab"], device)
    return cfg, model, stepper, batch


def make_step(stepper, batch):
    """One optimizer step of the trainer on `batch` (accumulate = 1, as the shipped configs)."""

    def step():
        images, ids, mask, labels = stepper.to_device(batch)
        stepper.micro_batch(images, ids, mask, labels)
        stepper.optimizer_step()

    return step


def count_flops(cfg, model, stepper, batch) -> int:
    """FLOPs of one eager step (forward + backward; the optimizer's elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from partsearch.train.step import Stepper

    eager_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=False))
    eager = Stepper(eager_cfg, model, stepper.module.criterion, stepper.optimizer, stepper.scheduler, stepper.device)
    counter = FlopCounterMode(display=False)
    with counter:
        make_step(eager, batch)()
    return counter.get_total_flops()


def measure(setting: str, device: torch.device, *, steps: int, repeats: int, overrides: list[str] | None = None,
            peak_tflops: float | None = None, classes: int | None = None) -> dict[str, Any]:
    from partsearch.train.optim import switch_on

    cuda = device.type == "cuda"
    cfg, model, stepper, batch = build(setting, device, overrides, classes)
    size = batch["image"].shape[0]
    flops = count_flops(cfg, model, stepper, batch)
    step = make_step(stepper, batch)
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
    tc = cfg.train
    compiled = "off" if not tc.compile else ("on" if stepper.module.compiled is not None else "failed, eager")
    row = {
        "setting": setting, "device": device.type, "batch": size,
        "image_size": "x".join(map(str, cfg.data.image_size)), "tokens": cfg.data.max_tokens,
        "precision": precision_label(cfg, device), "compile": compiled,
        "channels_last": switch_on(tc, "channels_last", device), "fused_adam": switch_on(tc, "fused_optimizer", device),
        "step_ms": seconds * 1000, "images_s": size / seconds,
        "gflops_per_image": flops / size / 1e9, "tflops": flops / seconds / 1e12,
        "mfu_pct": 100 * flops / seconds / 1e12 / peak_tflops if peak_tflops else None,
        "peak_mem_gib": peak_mem,
        "memory": "torch.cuda.max_memory_allocated" if cuda else "process peak RSS",
        "cpu_share_pct": cpu_share,
        # Read once, after the timing: the random model's losses stayed finite, so every timed step was a real one.
        "finite_loss": stepper.first_bad() is None,
    }
    log(f"{setting} (compile {compiled}): {row['images_s']:.1f} images/s")
    return row


def gpu_rows(setting: str, overrides: list[str], steps: int, repeats: int, peak_tflops: float | None,
             device: torch.device | None = None, classes: int | None = None, label: str = "") -> list[dict[str, Any]]:
    """One row of the gpu.sh table, named `setting b<batch> <label>` (`device` cpu, fewer
    `classes`: gpu.sh's CPU check)."""
    device = device or torch.device("cuda")
    row = measure(setting, device, steps=steps, repeats=repeats, overrides=overrides, peak_tflops=peak_tflops,
                  classes=classes)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    switches = [name for name in ("channels_last", "fused_adam") if row[name]]
    note = (f"{row['gflops_per_image']:.0f} GFLOP/image, {row['precision']}, "
            f"{', '.join(switches) or 'no channels_last/fused'}, compile {row['compile']}")
    if not row["finite_loss"]:
        note += ", LOSS NOT FINITE"
    return [{"part": "train-step", "setting": " ".join(filter(None, [setting, f"b{row['batch']}", label])), "images_s": row["images_s"], "tflops": row["tflops"],
             "mfu_pct": row["mfu_pct"], "peak_mem_gib": row["peak_mem_gib"], "note": note}]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("train-step", "images/s, peak memory and MFU of the trainer's training step")
    add_setting_arguments(parser)
    parser.add_argument("--batch", type=positive, default=None, help="default: the setting's data.batch_size")
    parser.add_argument("--steps", type=positive, default=10, help="steps per timed repeat on GPU")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="bf16 matmul ceiling for MFU (default on GPU: measured now)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    names = chosen_settings(parser, args, device)
    overrides = list(args.override) + ([f"data.batch_size={args.batch}"] if args.batch else [])
    notes = [] if device.type == "cuda" else [NO_GPU_NOTE]
    peak = args.peak_tflops
    if device.type == "cuda" and peak is None:
        from benchmarks.gpu_bench import matmul_tflops

        peak = matmul_tflops()
        notes.append(f"measured bf16 matmul ceiling: {peak:.0f} TFLOP/s")
    rows = [measure(n, device, steps=args.steps, repeats=args.repeats, overrides=overrides, peak_tflops=peak)
            for n in names]
    report("train-step", rows, args, notes)
    return 0
