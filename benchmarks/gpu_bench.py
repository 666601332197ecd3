"""The GPU suite that `benchmarks/gpu.sh` runs: measured ceilings first, then train-step, encode
and metrics, each in its own time budget and try/except, into ONE table.

The train-step and encode rows time the trainer's and the evaluation's own code on the shipped
configs (see train_step.py, encode.py). Ceilings are measured on the card itself (MFU is a fraction
of what THIS card does, not of a datasheet number): the bf16 rate of large square matrix
multiplies and the device-to-device copy bandwidth, both timed with CUDA events. Without a GPU
every part but the ceilings runs on the CPU at a small size (`CPU_CHECK`): a check of the code
paths before a GPU minute is spent, not a measurement.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from typing import Any

import torch

from benchmarks.common import base_parser, cuda_time, log, machine_info, report, table, write_json


def matmul_tflops(n: int = 8192, dtype: torch.dtype = torch.bfloat16, repeats: int = 5, inner: int = 10) -> float:
    """Measured dense matmul rate (TFLOP/s) of an (n x n) @ (n x n) product on the current GPU."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    out = torch.empty(n, n, device="cuda", dtype=dtype)
    seconds, _ = cuda_time(lambda: torch.matmul(a, b, out=out), repeats, warmup=3, inner=inner)
    return 2 * n**3 / seconds / 1e12


def copy_gbps(mib: int = 1024, repeats: int = 5, inner: int = 10) -> float:
    """Measured device-to-device copy bandwidth (GB/s, read + write counted) on the current GPU."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    seconds, _ = cuda_time(lambda: dst.copy_(src), repeats, warmup=3, inner=inner)
    return 2 * src.numel() / seconds / 1e9


def ceilings(matmul_n: int = 8192) -> dict[str, float]:
    result = {"bf16_matmul_tflops": matmul_tflops(matmul_n)}
    result["tf32_matmul_tflops"] = _tf32_rate(matmul_n)
    result["d2d_copy_gbps"] = copy_gbps()
    return result


def _tf32_rate(n: int) -> float:
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return matmul_tflops(n, torch.float32, repeats=3, inner=3)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


class Budget:
    """Wall-clock budget for the whole suite: a part is skipped (and says so) when it cannot fit."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


class PartTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise PartTimeout("over its time limit")


def _run_part(name: str, rows: list[dict[str, Any]], errors: dict[str, str], fn, limit_s: float,
              on_done=None) -> None:
    """Run one part under a SIGALRM time limit; record its rows, or one row saying why it failed."""
    log(f"{name}: start (limit {limit_s:.0f}s)")
    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, int(limit_s)))
    try:
        rows += fn()
        log(f"{name}: done in {time.monotonic() - start:.0f}s")
    except Exception as err:  # one setting's failure must not lose the others' figures
        errors[name] = f"{type(err).__name__}: {err}"
        log(f"{name}: FAILED after {time.monotonic() - start:.0f}s ({errors[name]})")
        traceback.print_exc(file=sys.stderr)
        rows.append({"part": name, "setting": "-", "note": f"failed: {type(err).__name__}: {str(err)[:120]}"})
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        torch.cuda.empty_cache()
    if on_done is not None:
        on_done()


# gpu.sh without a GPU: the train-step, encode and metrics parts run on the CPU at a size 2 cores
# finish in minutes (and 100 identities instead of 11,003), so the code paths are checked before a
# GPU minute is spent. Not figures. Left out: the ceilings, the switched and the compiled variants
# (the same code with other config values; tests/train/test_step.py checks the compile fallback).
CPU_CHECK = ["data.batch_size=2", "data.image_size=[64,32]", "data.max_tokens=8", "model.text_layers=2"]
CPU_CHECK_CLASSES = 100
# Besides the eager defaults: the speed switches a default could flip to, timed on the setting
# where they should matter most (a GPU default is set from these rows, docs/BENCHMARKS.md).
SWITCHED = {"cuhk_r50_bert": ["train.channels_last=true", "train.fused_optimizer=true"]}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import GPU_SETTINGS

    parser = base_parser("gpu", "the GPU suite: ceilings, train-step, encode, metrics (what gpu.sh runs)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="wall-clock budget of the whole suite")
    parser.add_argument("--settings", default=",".join(GPU_SETTINGS))
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per repeat")
    parser.add_argument("--compile-settings", default="cuhk_vitb16_bert",
                        help="settings also timed with train.compile=true (about a minute of compilation each)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override applied to every setting (repeatable)")
    parser.add_argument("--out", default=os.environ.get("OUT") or None,
                        help="folder for gpu_table.md and gpu.json (default: $OUT when set)")
    args = parser.parse_args(argv)
    machine = machine_info()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        print(f"no GPU is present (torch {machine['torch']}, {machine['cpu']}, {machine['cores']} cores): CPU check "
              f"of every part at a small size ({' '.join(CPU_CHECK)}); its timings are not figures")
    budget = Budget(args.budget_s)
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    found: dict[str, Any] = {}
    columns = ["part", "setting", "value", "unit", "images_s", "tflops", "mfu_pct", "peak_mem_gib", "note"]
    size = ([] if cuda else CPU_CHECK) + list(args.override)
    steps, repeats = (args.steps, 3) if cuda else (1, 1)

    def save() -> None:
        """After every part: the table so far, so a hard kill still leaves what was measured."""
        if not args.out:
            return
        where = f"{machine['gpu']}, CUDA {machine.get('cuda')}" if cuda else "NO GPU: CPU check, not figures"
        header = (f"GPU suite, {machine['date']}: {where}, torch {machine['torch']}, "
                  f"{machine['cpu']} ({machine['cores']} cores)\n\n")
        path = os.path.join(args.out, "gpu_table.md")
        with open(path + ".tmp", "w") as handle:
            handle.write(header + table(rows, columns) + "\n")
        os.replace(path + ".tmp", path)
        write_json(os.path.join(args.out, "gpu.json"), {"benchmark": "gpu", "machine": machine, "rows": rows,
                                                         "ceilings": found, "errors": errors})

    def ceiling_rows():
        found.update(ceilings())
        return [{"part": "ceiling", "setting": "bf16 matmul 8192^3", "value": found["bf16_matmul_tflops"], "unit": "TFLOP/s"},
                {"part": "ceiling", "setting": "tf32 matmul 8192^3", "value": found["tf32_matmul_tflops"], "unit": "TFLOP/s"},
                {"part": "ceiling", "setting": "D2D copy 1 GiB", "value": found["d2d_copy_gbps"], "unit": "GB/s"}]

    def part(name, fn, need_s, limit_s):
        if budget.left() < need_s:
            rows.append({"part": name, "setting": "-", "note": f"skipped: {budget.left():.0f}s of the budget left"})
            log(f"{name}: skipped ({budget.left():.0f}s left)")
            save()
            return
        _run_part(name, rows, errors, fn, min(limit_s, budget.left()), save)

    if cuda:
        part("ceilings", ceiling_rows, 5, 40)
    peak = found.get("bf16_matmul_tflops")
    settings = [s for s in args.settings.split(",") if s]
    compiled = [] if args.no_compile or not cuda else [s for s in args.compile_settings.split(",") if s]

    from benchmarks import encode, train_step

    def train(setting, overrides):
        return lambda: train_step.gpu_rows(setting, size + overrides, steps=steps, repeats=repeats,
                                           peak_tflops=peak, device=device, classes=None if cuda else CPU_CHECK_CLASSES,
                                           label=" ".join(overrides) or "eager")

    for setting in settings:
        part(f"train-step {setting} eager", train(setting, []), 20, 60 if cuda else 240)
    for setting, overrides in SWITCHED.items() if cuda else ():
        if setting in settings:
            part(f"train-step {setting} switches on", train(setting, overrides), 20, 60 if cuda else 240)
    batches = {} if cuda else {"image_batch": 8, "text_batch": 16, "overrides": size}
    for setting in settings:
        part(f"encode {setting}", lambda s=setting: encode.gpu_rows(s, repeats=repeats, device=device, **batches),
             15, 40 if cuda else 120)
    part("metrics", lambda: _metrics_rows(device, 19_848 if cuda else 2_000), 10, 40)
    for setting in compiled:
        # compilation takes a minute or more, so it runs last, with whatever budget is left
        part(f"train-step {setting} compile", train(setting, ["train.compile=true"]), 45, 200)

    report("gpu", rows, args, columns=columns, extra={"ceilings": found, "errors": errors},
           notes=[f"MFU = model FLOPs per step / step time / measured bf16 matmul rate ({peak and round(peak)} TFLOP/s)"
                  if cuda else "CPU check: code paths only, the timings are not figures"])
    save()
    return 1 if errors else 0


def _metrics_rows(device: torch.device, size: int = 19_848) -> list[dict[str, Any]]:
    """`size` captions x `size` images, 1,000 identities, on `device` (19,848: the ICFG-PEDES test split)."""
    from partsearch.eval.metrics import retrieval_metrics

    queries = gallery = size
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    gallery_ids = torch.randint(0, 1000, (gallery,), device=device, generator=gen)
    query_ids = gallery_ids[torch.randperm(gallery, device=device, generator=gen)]
    sim = torch.randn(queries, gallery, device=device, generator=gen)
    sim += 3.0 * (query_ids[:, None] == gallery_ids[None, :])  # a retrieval task with signal in it
    sync()
    times = []
    for _ in range(3 if cuda else 1):
        start = time.perf_counter()
        retrieval_metrics(sim, query_ids, gallery_ids)
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    label = "ICFG-PEDES 19,848 x 19,848" if size == 19_848 else f"{size:,} x {size:,}"
    return [{"part": "metrics", "setting": label, "value": times[len(times) // 2],
             "unit": f"s (median of {len(times)})"}]


if __name__ == "__main__":
    sys.exit(main())
