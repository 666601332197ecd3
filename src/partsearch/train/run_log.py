"""What a training run reports as it goes (`engine.Trainer` drives it): one line per log step in
`metrics.jsonl` and TensorBoard (`RunLog`), the loss terms summed since the last line
(`LogWindow`), each epoch's progress bar (`bar_extent`, `progress`) and the closing summary line.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from partsearch.files import write_text_atomic
from partsearch.runs import ENVIRONMENT, read_environment
from partsearch.train.checkpoint import RunState

# What must match between two sessions of a run for it to round as one uninterrupted run would.
SAME_ROUNDING = ("torch", "cpu_kernels", "threads", "device", "gpu")


class RunLog:
    """metrics.jsonl (one JSON object per line) and TensorBoard events; a no-op off rank 0."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))

    def write(self, record: dict[str, Any], scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class LogWindow:
    """The summed loss terms, micro-batches and images since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Any] = defaultdict(float)  # tensors on the device until a log line reads them
        self.count, self.images, self.start = 0, 0, time.perf_counter()

    def add(self, losses: dict[str, Any], loss: Any, images: int) -> None:
        for name, value in losses.items():
            self.sums[name] += value
        self.sums["loss"] += loss
        self.count += 1
        self.images += images


def bar_extent(batches: int, skip: int, epoch: int, step: int, steps_per_epoch: int, tc) -> tuple[int, str]:
    """(total, label) of one epoch's progress bar: with `max_steps` the bar ends where the run
    will stop and counts only the epochs it will reach, so `--max-steps 12` never shows "epoch 1/10"."""
    if not tc.max_steps:
        return batches, f"epoch {epoch + 1}/{tc.epochs}"
    epochs = min(tc.epochs, max(epoch + 1, math.ceil(tc.max_steps / steps_per_epoch)))
    total = min(batches, skip + max(0, tc.max_steps - step) * tc.accumulate)
    return total, f"epoch {epoch + 1}/{epochs} (stops at step {tc.max_steps})"


def progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from partsearch.progress import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)


def summary(run_dir: Path, state: RunState, start_step: int, seconds: float) -> None:
    best = (
        f"best t2i R1 {state.best:.2f} ({state.selection})" if state.best is not None
        else f"best.pt = {state.selection or 'last checkpoint'}"
    )
    print(
        f"done: {run_dir}: {state.step - start_step} steps this session ({state.step} in all, "
        f"epoch {state.epoch}) in {_format_duration(seconds)}; {best}; checkpoints last.pt, best.pt"
    )


def _format_duration(seconds: float) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


def record_environment(run_dir: Path, numerics: dict[str, Any], from_step: int) -> str | None:
    """Append this training session's `numerics` (`partsearch.device.numerics`) to the run's
    `environment.json`. Returns a note when the session before it rounded differently (other
    kernels, threads, torch or device): the resumed run will not equal an uninterrupted one."""
    sessions = read_environment(run_dir)
    note = None
    if sessions and from_step > 0:
        before = sessions[-1]
        changed = [k for k in SAME_ROUNDING if before.get(k) != numerics.get(k)]
        if changed:
            was = ", ".join(f"{k} {before.get(k)}" for k in changed)
            now = ", ".join(f"{k} {numerics.get(k)}" for k in changed)
            note = (f"note: this run resumes at step {from_step} with {now} where it ran with {was}: the steps from "
                    "here round differently, so its numbers will not equal those of an uninterrupted run")
    sessions.append({"from_step": from_step, **numerics})
    write_text_atomic(run_dir / ENVIRONMENT, json.dumps({"sessions": sessions}, indent=1) + "\n")
    return note
