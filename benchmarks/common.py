"""What every benchmark shares: the machine record, timing, peak memory, tables and JSON.

Every figure a benchmark reports travels with the machine it was measured on (CPU model, cores,
torch version, GPU name) and the date, so a number in docs/BENCHMARKS.md can always be traced to
its run. Timings are repeated and the median is quoted: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The record stored with every figure."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {prog}", description=description)
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the results as JSON")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is quoted")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return parser


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of `fn()` in seconds over `repeats` runs (after `warmup` untimed runs).

    On CUDA the caller's `fn` must synchronise (or use `cuda_time`), otherwise only the launch is timed.
    """
    wall, _ = wall_and_cpu(fn, repeats, warmup)
    return statistics.median(wall), wall


def wall_and_cpu(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of each of `repeats` runs of `fn()`. CPU / wall / threads is the
    share of its cores the run got: on a shared machine it says how much a wall time is inflated."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def cuda_time(fn: Callable[[], Any], repeats: int, warmup: int = 2, inner: int = 1) -> tuple[float, list[float]]:
    """Median seconds per call of `fn` timed with CUDA events: each repeat runs `fn` `inner` times
    between two events and synchronises only at the end, so no host sync sits inside the loop."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0 / inner)
    return statistics.median(times), times


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def log(message: str) -> None:
    """A progress line with a timestamp, on stderr so tables on stdout stay clean."""
    stamp = _dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain-text table (Markdown pipe syntax, so it pastes into docs/BENCHMARKS.md)."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.rjust(w) for v, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (temporary file then rename): a crash never leaves half a result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


def report(name: str, rows: list[dict[str, Any]], args: argparse.Namespace, notes: list[str] | None = None,
           columns: list[str] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Print the table (with the machine line) and write the JSON when `--json` was given."""
    machine = machine_info()
    print(f"## {name}  ({machine['date']}; {machine['cpu']}, {machine['cores']} cores, "
          f"torch {machine['torch']}, GPU: {machine['gpu'] or 'none'})")
    print(table(rows, columns))
    for note in notes or []:
        print(f"  note: {note}")
    payload = {"benchmark": name, "machine": machine, "argv": sys.argv, "rows": rows, "notes": notes or []}
    payload.update(extra or {})
    if getattr(args, "json", None):
        write_json(args.json, payload)
        log(f"wrote {args.json}")
    return payload


def set_threads(n: int) -> None:
    torch.set_num_threads(max(1, n))
    try:
        import faiss

        faiss.omp_set_num_threads(max(1, n))
    except ImportError:
        pass


# --- model settings shared by train-step, encode and heads ---------------------------------------

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# The shipped configs, as `partsearch train` reads them. Benchmarks change only what cannot be had
# here: pretrained weights (random instead; a step costs the same), and on a CPU the size
# (`--override`). `vocab` and `classes` are the data's: the tokenizer's vocabulary and the
# training identities (CUHK-PEDES: 11,003), which size the embeddings and the ID classifiers.
SETTINGS: dict[str, dict[str, Any]] = {
    "synth_cpu": {"config": CONFIGS / "synth_cpu.yaml", "overrides": [], "vocab": 30522, "classes": 600},
    "cuhk_r50_bert": {"config": CONFIGS / "cuhk_r50_bert.yaml", "vocab": 30522, "classes": 11003},
    "cuhk_vitb16_bert": {"config": CONFIGS / "cuhk_vitb16_bert.yaml", "vocab": 30522, "classes": 11003},
    "cuhk_clip_vitb16": {"config": CONFIGS / "cuhk_clip_vitb16.yaml", "vocab": 49408, "classes": 11003},
}
RANDOM_WEIGHTS = ["model.image_weights=random", "model.text_weights=random"]
GPU_SETTINGS = ["cuhk_r50_bert", "cuhk_vitb16_bert", "cuhk_clip_vitb16"]


def setting_config(name: str, overrides: list[str] | None = None):
    """The Config of a named setting: its shipped YAML, random weights unless the setting says
    otherwise, then the caller's overrides (`section.key=value`)."""
    from partsearch.config import load_config

    spec = SETTINGS[name]
    return load_config(spec["config"], list(spec.get("overrides", RANDOM_WEIGHTS)) + list(overrides or []))


def precision_label(cfg, device: torch.device) -> str:
    """What `partsearch.device.autocast(device, cfg.train.precision)` runs in."""
    precision = cfg.train.precision
    return "bf16 autocast" if precision == "bf16" or (precision == "auto" and device.type == "cuda") else "fp32"


def random_batch(batch: int, image_size: tuple[int, int], tokens: int, vocab: int, device: torch.device,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """A training loader's batch, of random data: images (B, 3, H, W), token ids/mask (B, L) with
    lengths in [L/4, L], and labels with two images per identity (the P x K sampler with K = 2),
    so ranking losses have positives."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *image_size, generator=gen)
    ids = torch.randint(1000, vocab, (batch, tokens), generator=gen)
    lengths = torch.randint(max(2, tokens // 4), tokens + 1, (batch,), generator=gen)
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).long()
    labels = torch.arange(batch) // 2
    return {k: v.to(device) for k, v in {"image": images, "ids": ids * mask, "mask": mask, "label": labels}.items()}


def resolve_device(text: str) -> torch.device:
    """`--device` of the benchmarks: partsearch's own rule, with a failure ending the run."""
    from partsearch.device import resolve_device as resolve
    from partsearch.errors import UserError

    try:
        return resolve(text)
    except UserError as err:
        raise SystemExit(str(err)) from None


NO_GPU_NOTE = "no GPU is present: the GPU settings (" + ", ".join(GPU_SETTINGS) + ") run in benchmarks/gpu.sh"


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """`--settings`, `--device` and `--override`, shared by the model benchmarks."""
    parser.add_argument("--settings", default=None,
                        help=f"comma-separated, of {', '.join(SETTINGS)} (default: synth_cpu on CPU, "
                             f"{', '.join(GPU_SETTINGS)} on GPU)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override applied to every setting (repeatable)")


def chosen_settings(parser: argparse.ArgumentParser, args: argparse.Namespace, device: torch.device) -> list[str]:
    """The settings named by `--settings`, or the device's defaults; unknown names end the run."""
    names = args.settings.split(",") if args.settings else (GPU_SETTINGS if device.type == "cuda" else ["synth_cpu"])
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    return names

