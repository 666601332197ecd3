"""Checkpoints and run directories: the write side (saving, linking, RNG state, the portable
config); reading a run back is `partsearch.runs`.

A checkpoint is one `torch.save`d dict (INTERNALS.md, train): `{"format": "partsearch/1",
"config", "num_classes", "vocab_size", "model", "criterion", "optimizer", "scheduler", "rng",
"epoch", "step", "best", "metrics"}` plus `"batch"` (micro-batches done in `epoch`) and
`"selection"` (how best.pt was chosen) [ours]. It holds only tensors and plain Python values, so
it loads with `torch.load(weights_only=True)`. It is written to a temporary file in the same
directory and renamed over the target, so a crash mid-write leaves the previous file intact.
Checkpoints written before issue 12 also hold `"scaler": None` (bf16 autocast needs no loss
scaling); loading and resuming ignore it.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partsearch.config import Config, from_dict
from partsearch.files import atomic_path


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def link_checkpoint(source: str | Path, target: str | Path) -> None:
    """Make `target` hold what `source` holds (best.pt = last.pt when an evaluation improved), as a
    hard link, so the two names share one copy on disk: a checkpoint carries the frozen pretrained
    weights too (about 83 of the embedded default's 121 MB), and writing it twice doubled a run's
    size [ours]. `save_checkpoint` always writes a new file and renames it over its target, so
    rewriting `source` later never changes `target`. Where links are not supported, a copy."""
    with atomic_path(target) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)



def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states as weights_only-loadable values."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(key.copy()), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])




DATA_PATHS = ("root", "jsonl_file")  # the data.* fields that are paths


def portable_config(cfg: Config, run_dir: str | Path) -> Config:
    """A copy of `cfg` for the run's `config.yaml`: relative data paths (relative to the directory
    training started in) are rewritten relative to `run_dir`, so evaluation works from any
    directory and a run moved together with its data still finds it. Absolute paths stay."""
    out = from_dict(cfg.to_dict())
    for key in DATA_PATHS:
        value = getattr(cfg.data, key)
        if value and not Path(value).is_absolute():
            setattr(out.data, key, os.path.relpath(Path(value).resolve(), Path(run_dir).resolve()))
    return out





