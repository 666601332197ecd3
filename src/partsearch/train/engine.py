"""The training loop: `train(cfg, run_dir, ...)` checks the config and the run directory, joins
DDP and runs a `Trainer` (its position in a `RunState`); the `partsearch train` command
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
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from partsearch.config import Config
from partsearch.device import numerics
from partsearch.errors import CheckpointError, TrainingError
from partsearch.files import write_text_atomic
from partsearch.hub import quiet_weight_loading
from partsearch.losses.criterion import check_loss_config
from partsearch.train import distributed
from partsearch.runs import FORMAT, config_differences, load_checkpoint, load_state_checked
from partsearch.train.checkpoint import (SCHEDULE, RunState, check_run_dir, link_checkpoint, portable_config,
                                         remove_previous_run, rng_state, save_checkpoint, set_rng_state)
from partsearch.train.optim import build_scheduler, check_train_config
from partsearch.train.run_log import LogWindow, RunLog, bar_extent, progress, record_environment, summary
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
        return Trainer(cfg, run_dir, ctx, resume=resume, evaluator=evaluator, splits=splits, tokenizer=tokenizer).run()
    finally:
        ctx.close()


class Trainer:
    """One training run, as the module docstring describes it. `__init__` writes `config.yaml`,
    builds data, model, criterion, optimizer and schedule and restores `last.pt` when resuming
    (`train` has checked the config and the run directory); `run()` trains epoch by epoch
    (`_train_epoch`), logs (`_log`), evaluates (`_evaluate`) and checkpoints (`_save`)."""

    def __init__(self, cfg: Config, run_dir: Path, ctx: distributed.DistContext, *, resume: bool = False,
                 evaluator: EvaluateFn | None = None, splits: Any = None, tokenizer: Any = None):
        from partsearch.data.datasets import build_train_loader
        from partsearch.data.formats import load_dataset
        from partsearch.model.backbones import build_image_transform, build_tokenizer

        self.cfg, self.run_dir, self.ctx, self.evaluator = cfg, run_dir, ctx, evaluator
        tc = cfg.train
        quiet_weight_loading()
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                remove_previous_run(run_dir)
            portable_config(cfg, run_dir).dump(run_dir / "config.yaml")
        seed_everything(tc.seed)
        if splits is None:
            splits = load_dataset(cfg.data.dataset, cfg.data.root, jsonl_file=cfg.data.jsonl_file or None)
        if tokenizer is None:
            tokenizer = build_tokenizer(cfg.model, cfg.data.max_tokens)
        self.tokenizer = tokenizer
        self.loader = build_train_loader(
            cfg, splits.train, splits.image_root, tokenizer, build_image_transform(cfg.model, cfg.data, train=True),
            rank=ctx.rank, world_size=ctx.world_size, seed=tc.seed,
        )
        self.num_classes = max(r.pid for r in splits.train) + 1
        self.model, self.criterion, self.optimizer = build_parts(cfg, self.num_classes, tokenizer.vocab_size, ctx.device)
        self.steps_per_epoch = math.ceil(len(self.loader) / tc.accumulate)
        self.scheduler = build_scheduler(tc, self.optimizer, self.steps_per_epoch)
        self.state = RunState()
        self.last_path, self.best_path = run_dir / "last.pt", run_dir / "best.pt"
        self.last_good = "none yet"
        if resume:
            self._restore()
        if ctx.rank > 0:
            # Ranks draw different augmentations; only rank 0's RNG state is checkpointed.
            seed_everything(tc.seed + ctx.rank + self.state.step)

        self.log = RunLog(run_dir, ctx.is_main)
        if ctx.is_main:
            note = record_environment(run_dir, numerics(ctx.device), self.state.step)
            if note:
                print(note)
        self.selection_split = tc.eval_split
        if evaluator is None:
            self.no_selection = "no evaluator was given"
        elif not getattr(splits, self.selection_split, None):
            self.no_selection = f"{splits.name} has no {self.selection_split} split"
        else:
            self.no_selection = ""
        if ctx.is_main:
            if self.no_selection:
                print(f"note: {self.no_selection}; best.pt = the last epoch")
            elif self.selection_split == "test":
                print("warning: model selection on the TEST split (train.eval_split=test); results are labelled so")
        self.stepper = Stepper(cfg, self.model, self.criterion, self.optimizer, self.scheduler, ctx.device, ctx,
                               log=print)
        self.window = LogWindow()
        self.start_time = time.perf_counter()

    def _restore(self) -> None:
        """Continue from `last.pt`: weights, optimizer, schedule, RNG states and position."""
        payload = load_checkpoint(self.last_path, map_location="cpu")
        if payload["num_classes"] != self.num_classes or payload["vocab_size"] != self.tokenizer.vocab_size:
            raise CheckpointError(
                f"{self.last_path}: trained with {payload['num_classes']} identities / vocabulary "
                f"{payload['vocab_size']}, but the data and tokenizer now give {self.num_classes} / "
                f"{self.tokenizer.vocab_size}; resume with the same data"
            )
        diff = config_differences(payload["config"], self.cfg.to_dict())
        load_state_checked(self.model, payload["model"], "model", self.last_path, diff)
        load_state_checked(self.criterion, payload["criterion"], "criterion", self.last_path, diff)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload["rng"])
        self.state = RunState(**{k: payload[k] for k in ("epoch", "batch", "step", "best", "metrics")},
                              selection=payload.get("selection", ""))
        self.last_good = f"{self.last_path} (step {self.state.step})"

    def run(self) -> Path:
        """Train until `train.epochs`, `max_steps` or `time_limit_min`; returns the run directory."""
        tc, state = self.cfg.train, self.state
        self.model.train()
        self.criterion.train()
        self.window.reset()
        self.start_time, start_step = time.perf_counter(), state.step
        stopped = state.step >= tc.max_steps > 0
        epoch = state.epoch
        while epoch < tc.epochs and not stopped:
            done, stopped = self._train_epoch(epoch)
            self._check_finite()
            epoch = self._end_epoch(epoch, done, stopped)
        self.log.close()
        if self.ctx.is_main:
            summary(self.run_dir, state, start_step, time.perf_counter() - self.start_time)
            planned = self.steps_per_epoch * tc.epochs
            planned = min(planned, tc.max_steps) if tc.max_steps else planned
            write_text_atomic(self.run_dir / SCHEDULE, json.dumps({"step": state.step, "planned_steps": planned}) + "\n")
        return self.run_dir

    def _train_epoch(self, epoch: int) -> tuple[int, bool]:
        """One epoch from where the run stands; returns (micro-batches done in it, stopped early)."""
        tc, state, ctx, loader = self.cfg.train, self.state, self.ctx, self.loader
        skip = state.batch if epoch == state.epoch else 0
        total, desc = bar_extent(len(loader), skip, epoch, state.step, self.steps_per_epoch, tc)
        bar = progress(total, skip, desc, ctx.is_main)
        done, stopped = skip, False
        for i, batch in enumerate(_epoch_loader(loader, epoch, skip, tc.seed), start=skip):
            images, ids, mask, labels = self.stepper.to_device(batch)
            steps_now = (i + 1) % tc.accumulate == 0 or i + 1 == len(loader)
            loss, losses = self.stepper.micro_batch(
                images, ids, mask, labels, sync_grads=steps_now, where=(state.step + 1, epoch + 1, i + 1)
            )
            self.window.add(losses, loss, images.shape[0] * ctx.world_size)
            done = i + 1
            if bar is not None:
                bar.update(1)
            if not steps_now:
                continue
            self.stepper.optimizer_step()
            state.step += 1
            log_now = state.step % tc.log_every == 0 or (tc.max_steps and state.step >= tc.max_steps)
            if log_now or (tc.nan_check_every and state.step % tc.nan_check_every == 0):
                self._check_finite()
            if log_now:
                self._log(round(epoch + (i + 1) / len(loader), 4), bar)
            if tc.max_steps and state.step >= tc.max_steps:
                stopped = True
                break
            if tc.time_limit_min > 0 and _out_of_time(self.start_time, tc.time_limit_min, ctx):
                stopped = True
                if ctx.is_main:
                    print(f"time limit of {tc.time_limit_min:g} min reached at step {state.step}")
                break
        if bar is not None:
            bar.close()
        return done, stopped

    def _end_epoch(self, epoch: int, done: int, stopped: bool) -> int:
        """Evaluate when due (every `eval_every` epochs and at the end), checkpoint; returns the
        next epoch."""
        tc, batches = self.cfg.train, len(self.loader)
        epoch_done = done >= batches
        next_epoch, next_batch = (epoch + 1, 0) if epoch_done else (epoch, done)
        final = stopped or next_epoch >= tc.epochs
        due = epoch_done and (next_epoch % tc.eval_every == 0)
        evaluated = None
        if (due or final) and self.ctx.is_main:
            evaluated = self._evaluate(next_epoch if epoch_done else round(epoch + done / batches, 4))
        self.state.epoch, self.state.batch = next_epoch, next_batch
        self._save(next_epoch, next_batch, evaluated)
        return next_epoch

    def _log(self, epoch: float, bar: Any) -> None:
        """One line of metrics.jsonl and TensorBoard: the window's mean loss terms, the
        criterion's diagnostics, learning rates and throughput."""
        window = self.window
        elapsed = time.perf_counter() - window.start
        record = {"step": self.state.step, "epoch": epoch}
        record.update({k: float(v) / window.count for k, v in window.sums.items()})
        record.update({k: float(v) for k, v in self.criterion.last_stats.items()})
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        record["lr"] = lrs.get("heads", lrs.get("heads_no_decay", 0.0))
        if "backbone" in lrs or "backbone_no_decay" in lrs:
            record["lr_backbone"] = lrs.get("backbone", lrs.get("backbone_no_decay"))
        record["images_per_s"] = window.images / max(elapsed, 1e-9)
        self.log.write(record, {f"train/{k}": v for k, v in record.items() if k not in ("step", "epoch")})
        if bar is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_s']:.1f}")
        window.reset()

    def _check_finite(self) -> None:
        """Stop at the first non-finite loss so far (one host sync; see step.py)."""
        bad = self.stepper.first_bad()
        if bad is None:
            return
        (step, epoch_no, batch_no), values = bad
        terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k != "loss") or "on another rank"
        raise TrainingError(
            f"non-finite loss at step {step} (epoch {epoch_no}, batch {batch_no}): {terms}; noticed at step "
            f"{self.state.step}, no checkpoint written since; last good checkpoint: {self.last_good}. "
            "Lower train.lr or set train.grad_clip, then --resume"
        )

    def _evaluate(self, epoch: float) -> dict | None:
        """Score the selection split with the evaluator, log it and keep the best t2i R1; None
        when there is nothing to select on."""
        if self.no_selection:
            return None
        state, split, model = self.state, self.selection_split, self.model
        # Evaluation leaves the RNG streams as it found them, so a run resumed from a checkpoint
        # taken after an evaluation continues exactly as the uninterrupted one.
        saved = rng_state()
        model.eval()
        with torch.no_grad():
            metrics = self.evaluator(model, split)
        model.train()
        set_rng_state(saved)
        r1 = float(metrics["t2i"]["R1"])
        improved = state.best is None or r1 > state.best
        label = "TEST" if split == "test" else split
        record = {"step": state.step, "epoch": epoch, "split": split, "eval": metrics, "selected": improved}
        if split == "test":
            record["note"] = "selected on TEST split"
        scalars = {f"eval/{split}/t2i_{k}": float(v) for k, v in metrics["t2i"].items()}
        self.log.write(record, scalars)
        print(f"[{label}] epoch {epoch} step {state.step}: t2i R1 {r1:.2f}  R5 {metrics['t2i'].get('R5', float('nan')):.2f}"
              f"  mAP {metrics['t2i'].get('mAP', float('nan')):.2f}" + ("  (best)" if improved else ""))
        if improved:
            state.best, state.metrics = r1, metrics
            state.selection = f"t2i R1 on the {label} split" + (" (selected on TEST split)" if label == "TEST" else "")
        return {"improved": improved}

    def _payload(self, epoch: int, batch: int) -> dict[str, Any]:
        state = self.state
        return {
            "format": FORMAT, "config": self.cfg.to_dict(), "num_classes": self.num_classes,
            "vocab_size": self.tokenizer.vocab_size, "model": self.model.state_dict(),
            "criterion": self.criterion.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "epoch": epoch, "batch": batch,
            "step": state.step, "best": state.best, "metrics": state.metrics, "selection": state.selection,
        }

    def _save(self, epoch: int, batch: int, evaluated: dict | None) -> None:
        """Write last.pt (rank 0) and make best.pt follow it when the evaluation improved, when
        there is no selection, or when there is no best.pt yet."""
        if self.ctx.is_main:
            if self.no_selection:
                self.state.selection = f"last epoch ({self.no_selection})"
            save_checkpoint(self.last_path, self._payload(epoch, batch))
            if self.no_selection or (evaluated and evaluated["improved"]) or not self.best_path.exists():
                link_checkpoint(self.last_path, self.best_path)
        self.last_good = f"{self.last_path} (step {self.state.step})"
        self.ctx.barrier()


def _out_of_time(start: float, limit_min: float, ctx: distributed.DistContext) -> bool:
    """Rank 0's clock decides, so every rank stops at the same step."""
    flag = torch.tensor([float(time.perf_counter() - start > 60 * limit_min)])
    if ctx.enabled:
        flag = flag.to(ctx.device)
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())
