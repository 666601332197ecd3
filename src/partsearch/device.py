"""Where and in which precision the model runs: one rule for training, evaluation and search.

`resolve_device("auto")` is the GPU when one is visible, else the CPU; `autocast(device,
precision)` is bf16 autocast with fp32 weights on a GPU under `precision: auto`, always under
`bf16`, and nothing under `fp32` or on the CPU under `auto` (METHOD.md, Training defaults [ours]).
"""

from __future__ import annotations

import contextlib

import torch

from partsearch.errors import UserError


def resolve_device(spec: str, local_rank: int = 0, name: str = "--device") -> torch.device:
    """`auto` -> cuda:LOCAL_RANK when a GPU is visible, else cpu; `cuda` -> cuda:LOCAL_RANK.
    `name` is the option or config key the error message names."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"{name}={spec}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{name}={spec}: no CUDA device is visible; use {name}=cpu")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context of `train.precision` on `device` (a no-op context for fp32)."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def cpu_name() -> str:
    """The CPU's model name as the OS reports it (`/proc/cpuinfo` on Linux), else the platform's."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def numerics(device: torch.device) -> dict:
    """What decides the rounding of a run beside its config and seed, for the run's record: torch's
    version, the CPU and the kernels torch dispatches to on it (`AVX2`, `AVX512`, ...: the vector
    width changes the order of a sum), the thread count, and the GPU when the run uses one. Two
    runs agree bit for bit only where these agree (docs/BENCHMARKS.md, section 3)."""
    record = {"torch": torch.__version__, "device": str(device), "cpu": cpu_name(),
              "cpu_kernels": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record
