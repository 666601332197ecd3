"""Checkpoints and run directories: the write side (saving, linking, RNG state, the portable
config, the position a checkpoint records (`RunState`), which run directories a run may start in
and the files it leaves there); reading a run back is `partsearch.runs`.

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

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partsearch.config import Config, from_dict
from partsearch.errors import CheckpointError
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


@dataclass
class RunState:
    """Where a run stands; checkpointed, and restored by `--resume`. `batch`: micro-batches already
    done in `epoch`; `best`: the best t2i R1 so far (None before any evaluation), `metrics` its
    evaluation; `selection`: how best.pt was chosen."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: float | None = None
    metrics: dict = field(default_factory=dict)
    selection: str = ""


# What a run writes into its directory; a fresh run (not --resume) removes the previous run's copies.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "tb", "environment.json")


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a fresh run over a directory that holds a trained one, so its checkpoints
    and log are never replaced or mixed by accident."""
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise CheckpointError(f"cannot resume: {run_dir / 'last.pt'} does not exist; train without --resume first")
        return
    held = [name for name in ("best.pt", "last.pt") if (run_dir / name).exists()]
    if held and not overwrite:
        raise CheckpointError(
            f"{run_dir} already holds a run ({', '.join(held)}); continue it with --resume, "
            "replace it with --overwrite, or choose another --out"
        )


def remove_previous_run(run_dir: Path) -> None:
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


SCHEDULE = "schedule.json"  # {"step", "planned_steps"} at the end of each `train` call


def read_schedule(run_dir: str | Path) -> dict | None:
    """`{"step", "planned_steps"}` of a finished `train` call (`SCHEDULE`), None when absent: a run
    whose step is below its plan was cut by `train.time_limit_min`."""
    try:
        values = json.loads(Path(run_dir, SCHEDULE).read_text())
    except (OSError, ValueError):
        return None
    return values if isinstance(values, dict) and {"step", "planned_steps"} <= set(values) else None
