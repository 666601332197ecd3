"""The training loop: `train(cfg, run_dir, ...)`; the `partsearch train` command
(`commands/train.py`) resolves the config and wires the evaluator in.

What it does, in order: validate the config (unknown backbone, loss or value -> ConfigError
before any work); join DDP when launched by torchrun; write `config.yaml`; build data, model,
criterion, optimizer (`optim.py`) and per-step schedule; optionally resume from `last.pt`; then
per micro-batch: bf16 autocast on GPU (fp32 on CPU, `train.precision`), gradient accumulation,
clipping, an optimizer and a schedule step, all in `step.py`, which the train-step benchmark runs
too; a non-finite loss is watched on the device and read back only at log lines, checkpoints and
every `nan_check_every` steps (see `step.py`); `max_steps` and `time_limit_min` stop early (with a
checkpoint and an evaluation). Every `log_every` steps one line goes to
`metrics.jsonl` and TensorBoard (`tb/`); every `eval_every` epochs the `evaluator(model, split)`
callback scores the val split and `best.pt` keeps the best t2i R1 (IRRA's practice, but never on
the test split unless `train.eval_split=test`, and then every record says so). Without a val
split (ICFG-PEDES) or an evaluator, `best.pt` is the last epoch and the run says so.

Exact resumption [ours]: the checkpoint stores the position (epoch, micro-batches done), the RNG
states and the optimizer/schedule; each epoch's batches are drawn from a sampler seeded by
(seed, epoch) and the loader's worker seeds from a generator seeded the same way, so with
`data.num_workers=0` a resumed run repeats the uninterrupted one step for step. With workers,
resuming at an epoch boundary is exact; mid-epoch, augmentation draws differ.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from partsearch.config import Config
from partsearch.errors import CheckpointError, TrainingError
from partsearch.hub import quiet_weight_loading
from partsearch.losses.criterion import check_loss_config
from partsearch.train import distributed
from partsearch.train.checkpoint import (
    FORMAT, config_differences, link_checkpoint, load_checkpoint, load_state_checked, portable_config, rng_state,
    save_checkpoint, set_rng_state,
)
from partsearch.train.optim import build_scheduler, check_train_config
from partsearch.train.step import Stepper, build_parts

EvaluateFn = Callable[[nn.Module, str], dict]  # evaluate(model, split) -> the eval JSON dict


def check_config(cfg: Config) -> None:
    """Every check that needs no data or weights, so a typo stops the run before any work."""
    from partsearch.model.backbones import check_backbone_names

    check_train_config(cfg.train)
    check_loss_config(cfg.loss)
    check_backbone_names(cfg.model)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _epoch_loader(loader: DataLoader, epoch: int, skip: int, seed: int) -> DataLoader:
    """The loader of one epoch, starting after `skip` batches, with per-epoch seeded worker
    seeds (see the module docstring)."""
    for sampler in (loader.batch_sampler, loader.sampler):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
    batches = list(loader.batch_sampler)[skip:]
    kwargs: dict[str, Any] = {}
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(
        loader.dataset, batch_sampler=batches, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
        generator=torch.Generator().manual_seed(seed * 100_003 + epoch), **kwargs,
    )


def _format_duration(seconds: float) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


# What a run writes into its directory; a fresh run (not --resume) removes the previous run's copies.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "tb")


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


def _remove_previous_run(run_dir: Path) -> None:
    import shutil

    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def train(
    cfg: Config,
    run_dir: str | Path,
    resume: bool = False,
    evaluator: EvaluateFn | None = None,
    *,
    splits: Any = None,
    tokenizer: Any = None,
    overwrite: bool = False,
) -> Path:
    """Train `cfg` into `run_dir` and return it. `splits` / `tokenizer` may be passed when the
    caller already built them (the command does, for the evaluator); otherwise they are built here.
    A directory that already holds a run is refused unless `resume` (continue it) or `overwrite`
    (replace it)."""
    check_config(cfg)
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume, overwrite)
    ctx = distributed.setup(cfg.train.device)
    try:
        return _train(cfg, run_dir, resume, evaluator, splits, tokenizer, ctx)
    finally:
        ctx.close()


def _train(cfg, run_dir, resume, evaluator, splits, tokenizer, ctx) -> Path:
    from partsearch.data.datasets import build_train_loader
    from partsearch.data.formats import load_dataset
    from partsearch.model.backbones import build_image_transform, build_tokenizer

    tc = cfg.train
    device = ctx.device
    quiet_weight_loading()
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            _remove_previous_run(run_dir)
        portable_config(cfg, run_dir).dump(run_dir / "config.yaml")
    seed_everything(tc.seed)
    if splits is None:
        splits = load_dataset(cfg.data.dataset, cfg.data.root, jsonl_file=cfg.data.jsonl_file or None)
    if tokenizer is None:
        tokenizer = build_tokenizer(cfg.model, cfg.data.max_tokens)
    loader = build_train_loader(
        cfg, splits.train, splits.image_root, tokenizer, build_image_transform(cfg.model, cfg.data, train=True),
        rank=ctx.rank, world_size=ctx.world_size, seed=tc.seed,
    )
    num_classes = max(r.pid for r in splits.train) + 1
    model, criterion, optimizer = build_parts(cfg, num_classes, tokenizer.vocab_size, device)
    steps_per_epoch = math.ceil(len(loader) / tc.accumulate)
    scheduler = build_scheduler(tc, optimizer, steps_per_epoch)
    pos = {"epoch": 0, "batch": 0, "step": 0, "best": None, "metrics": {}, "selection": ""}
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    last_good = "none yet"
    if resume:
        payload = load_checkpoint(last_path, map_location="cpu")
        if payload["num_classes"] != num_classes or payload["vocab_size"] != tokenizer.vocab_size:
            raise CheckpointError(
                f"{last_path}: trained with {payload['num_classes']} identities / vocabulary {payload['vocab_size']}, "
                f"but the data and tokenizer now give {num_classes} / {tokenizer.vocab_size}; resume with the same data"
            )
        diff = config_differences(payload["config"], cfg.to_dict())
        load_state_checked(model, payload["model"], "model", last_path, diff)
        load_state_checked(criterion, payload["criterion"], "criterion", last_path, diff)
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload["rng"])
        pos.update({k: payload[k] for k in ("epoch", "batch", "step", "best", "metrics")})
        pos["selection"] = payload.get("selection", "")
        last_good = f"{last_path} (step {pos['step']})"
    if ctx.rank > 0:
        # Ranks draw different augmentations; only rank 0's RNG state is checkpointed.
        seed_everything(tc.seed + ctx.rank + pos["step"])

    log = RunLog(run_dir, ctx.is_main)
    selection_split = tc.eval_split
    eval_records = getattr(splits, selection_split, None)
    if evaluator is None:
        no_selection = "no evaluator was given"
    elif not eval_records:
        no_selection = f"{splits.name} has no {selection_split} split"
    else:
        no_selection = ""
    if ctx.is_main:
        if no_selection:
            print(f"note: {no_selection}; best.pt = the last epoch")
        elif selection_split == "test":
            print("warning: model selection on the TEST split (train.eval_split=test); results are labelled so")

    stepper = Stepper(cfg, model, criterion, optimizer, scheduler, device, ctx, log=print)

    def check_finite() -> None:
        """Stop at the first non-finite loss so far (one host sync; see step.py)."""
        bad = stepper.first_bad()
        if bad is None:
            return
        (step, epoch_no, batch_no), values = bad
        terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k != "loss") or "on another rank"
        raise TrainingError(
            f"non-finite loss at step {step} (epoch {epoch_no}, batch {batch_no}): {terms}; noticed at step "
            f"{pos['step']}, no checkpoint written since; last good checkpoint: {last_good}. "
            "Lower train.lr or set train.grad_clip, then --resume"
        )

    def payload_now(epoch: int, batch: int) -> dict[str, Any]:
        return {
            "format": FORMAT, "config": cfg.to_dict(), "num_classes": num_classes, "vocab_size": tokenizer.vocab_size,
            "model": model.state_dict(), "criterion": criterion.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng_state(), "epoch": epoch, "batch": batch,
            "step": pos["step"], "best": pos["best"], "metrics": pos["metrics"], "selection": pos["selection"],
        }

    def evaluate(epoch: int) -> dict | None:
        if no_selection:
            return None
        # Evaluation leaves the RNG streams as it found them, so a run resumed from a checkpoint
        # taken after an evaluation continues exactly as the uninterrupted one.
        saved = rng_state()
        model.eval()
        with torch.no_grad():
            metrics = evaluator(model, selection_split)
        model.train()
        set_rng_state(saved)
        r1 = float(metrics["t2i"]["R1"])
        improved = pos["best"] is None or r1 > pos["best"]
        label = "TEST" if selection_split == "test" else selection_split
        record = {"step": pos["step"], "epoch": epoch, "split": selection_split, "eval": metrics, "selected": improved}
        if selection_split == "test":
            record["note"] = "selected on TEST split"
        scalars = {f"eval/{selection_split}/t2i_{k}": float(v) for k, v in metrics["t2i"].items()}
        log.write(record, scalars)
        print(f"[{label}] epoch {epoch} step {pos['step']}: t2i R1 {r1:.2f}  R5 {metrics['t2i'].get('R5', float('nan')):.2f}"
              f"  mAP {metrics['t2i'].get('mAP', float('nan')):.2f}" + ("  (best)" if improved else ""))
        if improved:
            pos["best"], pos["metrics"] = r1, metrics
            pos["selection"] = f"t2i R1 on the {label} split" + (" (selected on TEST split)" if label == "TEST" else "")
        return {"improved": improved}

    def checkpoint(epoch: int, batch: int, evaluated: dict | None) -> None:
        nonlocal last_good
        if ctx.is_main:
            if no_selection:
                pos["selection"] = f"last epoch ({no_selection})"
            payload = payload_now(epoch, batch)
            save_checkpoint(last_path, payload)
            if no_selection or (evaluated and evaluated["improved"]) or not best_path.exists():
                link_checkpoint(last_path, best_path)
        last_good = f"{last_path} (step {pos['step']})"
        ctx.barrier()

    model.train()
    criterion.train()
    window: dict[str, float] = defaultdict(float)
    window_count, window_images, window_start = 0, 0, time.perf_counter()
    start_time, start_step = time.perf_counter(), pos["step"]
    stopped = pos["step"] >= tc.max_steps > 0
    epoch = pos["epoch"]
    while epoch < tc.epochs and not stopped:
        skip = pos["batch"] if epoch == pos["epoch"] else 0
        epoch_loader = _epoch_loader(loader, epoch, skip, tc.seed)
        total, desc = _bar_extent(len(loader), skip, epoch, pos["step"], steps_per_epoch, tc)
        bar = _progress(total, skip, desc, ctx.is_main)
        done = skip
        for i, batch in enumerate(epoch_loader, start=skip):
            images, ids, mask, labels = stepper.to_device(batch)
            steps_now = (i + 1) % tc.accumulate == 0 or i + 1 == len(loader)
            loss, losses = stepper.micro_batch(
                images, ids, mask, labels, sync_grads=steps_now, where=(pos["step"] + 1, epoch + 1, i + 1)
            )
            for name, value in losses.items():
                window[name] += value
            window["loss"] += loss
            window_count += 1
            window_images += images.shape[0] * ctx.world_size
            done = i + 1
            if bar is not None:
                bar.update(1)
            if not steps_now:
                continue
            stepper.optimizer_step()
            pos["step"] += 1
            log_now = pos["step"] % tc.log_every == 0 or (tc.max_steps and pos["step"] >= tc.max_steps)
            if log_now or (tc.nan_check_every and pos["step"] % tc.nan_check_every == 0):
                check_finite()
            if log_now:
                elapsed = time.perf_counter() - window_start
                record = {"step": pos["step"], "epoch": round(epoch + (i + 1) / len(loader), 4)}
                record.update({k: float(v) / window_count for k, v in window.items()})
                record.update({k: float(v) for k, v in criterion.last_stats.items()})
                lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
                record["lr"] = lrs.get("heads", lrs.get("heads_no_decay", 0.0))
                if "backbone" in lrs or "backbone_no_decay" in lrs:
                    record["lr_backbone"] = lrs.get("backbone", lrs.get("backbone_no_decay"))
                record["images_per_s"] = window_images / max(elapsed, 1e-9)
                log.write(record, {f"train/{k}": v for k, v in record.items() if k not in ("step", "epoch")})
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_s']:.1f}")
                window.clear()
                window_count, window_images, window_start = 0, 0, time.perf_counter()
            if tc.max_steps and pos["step"] >= tc.max_steps:
                stopped = True
                break
            if tc.time_limit_min > 0 and _out_of_time(start_time, tc.time_limit_min, ctx):
                stopped = True
                if ctx.is_main:
                    print(f"time limit of {tc.time_limit_min:g} min reached at step {pos['step']}")
                break
        if bar is not None:
            bar.close()
        check_finite()
        epoch_done = done >= len(loader)
        next_epoch, next_batch = (epoch + 1, 0) if epoch_done else (epoch, done)
        final = stopped or next_epoch >= tc.epochs
        due = epoch_done and (next_epoch % tc.eval_every == 0)
        evaluated = None
        if (due or final) and ctx.is_main:
            evaluated = evaluate(next_epoch if epoch_done else round(epoch + done / len(loader), 4))
        pos["epoch"], pos["batch"] = next_epoch, next_batch
        checkpoint(next_epoch, next_batch, evaluated)
        epoch = next_epoch
    log.close()
    if ctx.is_main:
        _summary(run_dir, pos, start_step, time.perf_counter() - start_time)
    return run_dir


def _out_of_time(start: float, limit_min: float, ctx: distributed.DistContext) -> bool:
    """Rank 0's clock decides, so every rank stops at the same step."""
    flag = torch.tensor([float(time.perf_counter() - start > 60 * limit_min)])
    if ctx.enabled:
        flag = flag.to(ctx.device)
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def _bar_extent(batches: int, skip: int, epoch: int, step: int, steps_per_epoch: int, tc) -> tuple[int, str]:
    """(total, label) of one epoch's progress bar: with `max_steps` the bar ends where the run
    will stop and counts only the epochs it will reach, so `--max-steps 12` never shows "epoch 1/10"."""
    if not tc.max_steps:
        return batches, f"epoch {epoch + 1}/{tc.epochs}"
    epochs = min(tc.epochs, max(epoch + 1, math.ceil(tc.max_steps / steps_per_epoch)))
    total = min(batches, skip + max(0, tc.max_steps - step) * tc.accumulate)
    return total, f"epoch {epoch + 1}/{epochs} (stops at step {tc.max_steps})"


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)


def _summary(run_dir: Path, pos: dict, start_step: int, seconds: float) -> None:
    best = (
        f"best t2i R1 {pos['best']:.2f} ({pos['selection']})" if pos["best"] is not None
        else f"best.pt = {pos['selection'] or 'last checkpoint'}"
    )
    print(
        f"done: {run_dir}: {pos['step'] - start_step} steps this session ({pos['step']} in all, "
        f"epoch {pos['epoch']}) in {_format_duration(seconds)}; {best}; checkpoints last.pt, best.pt"
    )
