"""How much the part-level heads add to the backbones' forward pass (time and FLOPs).

The heads are everything after the two backbones: projections, GMP, the modality encoders, the
shared decoder (coarse tokens for both modalities, fine tokens for the text), the foreground map
and the stripes. Settings are the paper's shipped configs (`configs/cuhk_r50_bert.yaml`,
`configs/cuhk_vitb16_bert.yaml`: ResNet-50 or ViT-B/16 at 384x128 and bert-base, d = 512,
N_c = P = 6) with random weights, captions of `--tokens` tokens. Target: the heads add at most
15% to the backbones.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions,
attention; elementwise ops are not counted), the heads' on the backbones' cached outputs. Times
are medians of `--repeats` forward passes under `torch.no_grad()`, in the config's precision
(`partsearch.device.autocast`: fp32 on CPU, bf16 autocast on CUDA), of the backbones, of the heads on the backbones' cached outputs, and of the whole model.
`heads_time_%` is heads / backbones: wall time on CPU; on CUDA the sum of the GPU kernels'
durations (torch.profiler, `*_kernel_ms`), because eager PyTorch on a fast GPU is bound by the CPU
launching kernels, so its wall time counts operators rather than work.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    SETTINGS as MODELS, base_parser, cuda_time, log, median_time, positive, precision_label, random_batch, report,
    resolve_device, set_threads, setting_config,
)

SETTINGS = ["cuhk_r50_bert", "cuhk_vitb16_bert"]


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _kernel_seconds(fn, repeats: int) -> float:
    """GPU kernel time per call (sum of the CUDA kernels' durations), blind to launch overhead."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    total_us = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0) for e in prof.key_averages())
    return total_us / 1e6 / repeats


def measure(name: str, batch: int, tokens: int, repeats: int, device: torch.device) -> dict:
    from partsearch.device import autocast
    from partsearch.model.model import build_model

    cfg = setting_config(name)
    vocab = MODELS[name]["vocab"]
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=vocab).to(device).eval()
    data = random_batch(batch, tuple(cfg.data.image_size), tokens, vocab, device)

    def backbones():
        return model.image_backbone(data["image"]), model.text_backbone(data["ids"], data["mask"])

    def full():
        return model(data["image"], data["ids"], data["mask"])

    with torch.no_grad(), autocast(device, cfg.train.precision):
        image_out, text_out = backbones()

        def heads():
            return model.image_heads(image_out), model.text_heads(text_out)

        timer = (lambda fn: cuda_time(fn, repeats)) if device.type == "cuda" else (lambda fn: median_time(fn, repeats))
        backbone_s, _ = timer(backbones)
        full_s, _ = timer(full)
        heads_s, _ = timer(heads)
        backbone_flops, heads_flops = _flops(backbones), _flops(heads)
        row = {
            "setting": name, "device": device.type, "precision": precision_label(cfg, device),
            "batch": batch, "backbones_ms": backbone_s * 1e3, "heads_ms": heads_s * 1e3, "model_ms": full_s * 1e3,
        }
        share = heads_s / backbone_s
        if device.type == "cuda":
            backbone_k, heads_k = _kernel_seconds(backbones, repeats), _kernel_seconds(heads, repeats)
            row.update(backbones_kernel_ms=backbone_k * 1e3, heads_kernel_ms=heads_k * 1e3)
            share = heads_k / backbone_k
    row.update({
        "heads_time_%": 100 * share,
        "backbones_GFLOP": backbone_flops / 1e9,
        "heads_GFLOP": heads_flops / 1e9,
        "heads_flops_%": 100 * heads_flops / backbone_flops,
    })
    return row


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("heads", __doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--batch", type=positive, default=8)
    parser.add_argument("--tokens", type=positive, default=64)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    parser.set_defaults(repeats=3)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    rows = []
    for name in args.settings.split(","):
        if name not in SETTINGS:
            parser.error(f"unknown setting '{name}'; choose from {', '.join(SETTINGS)}")
        log(f"heads: {name} on {device}, batch {args.batch}, {args.tokens} tokens")
        rows.append(measure(name, args.batch, args.tokens, args.repeats, device))
    notes = [f"heads add at most {max(r['heads_flops_%'] for r in rows):.1f}% FLOPs and "
             f"{max(r['heads_time_%'] for r in rows):.1f}% time to the backbones (target <= 15%)"]
    report("heads", rows, args, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
