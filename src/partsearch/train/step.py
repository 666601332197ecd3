"""The training step, shared by `partsearch train` (engine.py) and the train-step benchmark, so a
benchmark figure is the speed of the trainer itself.

`build_parts` makes the model, criterion and optimizer of a config on a device; `Stepper` runs a
micro-batch (inputs to the device, forward under the precision's autocast, the criterion, a finite
check and backward) and an optimizer step (clipping, optimizer, schedule). The speed switches of
`TrainConfig` act here: `channels_last`, `fused_optimizer` (in `optim.build_optimizer`),
`compile` and `nan_check_every`.

Deferred finite check [ours]: `bool(torch.isfinite(loss))` after every micro-batch makes the host
wait for the GPU each step, so the next step's kernels cannot be queued while this one runs.
`FiniteWatch` instead keeps, on the device, the first micro-batch whose loss was not finite and
its loss terms; the host reads it (one sync) only when the engine asks: every
`train.nan_check_every` steps, at each log line (which reads the losses anyway) and before every
evaluation and checkpoint. A bad step is therefore noticed a few steps late, but named exactly,
and no checkpoint is ever written after it.

torch.compile: only the model is compiled; the losses are small next to it and their
data-dependent masks would only add graph breaks. A compiler that fails (torch 2.11's inductor
does on the decoder's block-diagonal mask, docs/BENCHMARKS.md) makes the step warn once and
carry on eagerly instead of ending the run.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable

import torch
from torch import nn

from partsearch.config import Config
from partsearch.device import autocast
from partsearch.losses.criterion import PartSearchCriterion
from partsearch.train.optim import build_optimizer, switch_on
from partsearch.train.text_cache import FrozenTextPrefix


def build_parts(cfg: Config, num_classes: int, vocab_size: int, device: torch.device):
    """(model, criterion, optimizer) of `cfg` on `device`, in the memory format the trainer uses."""
    from partsearch.model.model import build_model

    model = build_model(cfg, vocab_size).to(device)
    if switch_on(cfg.train, "channels_last", device):
        model = model.to(memory_format=torch.channels_last)
    m = cfg.model
    criterion = PartSearchCriterion(cfg.loss, num_classes, m.dim, m.num_coarse, m.num_fine).to(device)
    return model, criterion, build_optimizer(cfg.train, model, criterion)


class TrainStep(nn.Module):
    """Model and criterion as one module, so DDP averages the classifiers' gradients too.
    `compiled`, when set, is the compiled model's forward; `use_eager()` drops it."""

    def __init__(self, model: nn.Module, criterion: PartSearchCriterion, compiled: Callable | None = None):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.compiled = compiled

    def use_eager(self) -> None:
        self.compiled = None

    def forward(self, images, ids, mask, labels) -> dict[str, torch.Tensor]:
        image_emb, text_emb = (self.compiled or self.model)(images, ids, mask)
        return self.criterion(image_emb, text_emb, labels)


def is_compile_error(err: BaseException) -> bool:
    """Whether `err` came from torch.compile (Dynamo or its backend, e.g. inductor). An error of
    the model's own that Dynamo met while tracing counts too; the eager retry raises it again."""
    dynamo = sys.modules.get("torch._dynamo.exc")
    return dynamo is not None and isinstance(err, dynamo.TorchDynamoException)


class FiniteWatch:
    """Remembers, on the device, the first observed micro-batch whose loss was not finite and its
    loss terms; `first_bad()` reads it on the host (the only sync). Micro-batches are numbered
    in observation order; `where` maps each number to what the error message names."""

    def __init__(self) -> None:
        self.count = 0
        self.bad: torch.Tensor | None = None  # 0-dim int64: number of the first bad micro-batch, -1 = none
        self.values: torch.Tensor | None = None  # (1 + terms,): the loss and its terms at that micro-batch
        self.names: list[str] = []
        self.where: dict[int, Any] = {}

    def observe(self, loss: torch.Tensor, losses: dict[str, torch.Tensor], where: Any) -> None:
        values = torch.stack([loss.detach().float(), *(v.detach().float() for v in losses.values())])
        if self.bad is None:
            self.bad = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self.values = torch.zeros_like(values)
            self.names = ["loss", *losses]
        first = ~torch.isfinite(values[0]) & (self.bad < 0)
        self.bad = torch.where(first, self.count, self.bad)
        self.values = torch.where(first, values, self.values)
        self.where[self.count] = where
        self.count += 1

    def first_bad(self, all_reduce: Callable[[torch.Tensor], None] | None = None) -> tuple[Any, dict[str, float]] | None:
        """`(where, {name: value})` of the first bad micro-batch (on any rank when `all_reduce`
        takes the minimum over ranks), or None; forgets the good micro-batches seen so far."""
        if self.bad is None:
            return None
        bad = torch.where(self.bad < 0, self.count, self.bad).reshape(1)
        if all_reduce is not None:
            all_reduce(bad)
        index = int(bad.item())
        if index >= self.count:
            self.where.clear()
            return None
        local = int(self.bad.item()) == index
        terms = dict(zip(self.names, self.values.tolist())) if local else {}
        return self.where[index], terms


class Stepper:
    """Micro-batches and optimizer steps of one training run (see the module docstring).

    `ctx` is the engine's `DistContext` (None: one process); under DDP the model and criterion
    are wrapped together, and `sync_grads=False` skips the gradient all-reduce of a micro-batch
    that accumulates."""

    def __init__(self, cfg: Config, model: nn.Module, criterion: PartSearchCriterion, optimizer: torch.optim.Optimizer,
                 scheduler, device: torch.device, ctx=None, log: Callable[[str], None] | None = None):
        tc = cfg.train
        self.tc, self.device, self.ctx = tc, device, ctx
        self.optimizer, self.scheduler = optimizer, scheduler
        self.channels_last = switch_on(tc, "channels_last", device)
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.text_prefix = FrozenTextPrefix.attach(model, cfg)
        compiled = torch.compile(model.forward) if tc.compile else None
        self.module = TrainStep(model, criterion, compiled)
        self.runner: nn.Module = self.module
        if ctx is not None and ctx.enabled:
            unused = any(getattr(cfg.loss, k) == 0 for k in ("id_coarse", "id_fine", "rank_coarse", "cmr"))
            self.runner = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused
            )
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.watch = FiniteWatch()
        self._stage = "forward"  # where a compile failure happened, for the fallback

    def to_device(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(images, ids, mask, labels) of a loader batch on the device, images in the trainer's layout."""
        images = batch["image"].to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        ids = batch["ids"].to(self.device, non_blocking=True)
        mask = batch["mask"].to(self.device, non_blocking=True)
        return images, ids, mask, batch["label"].to(self.device, non_blocking=True)

    def micro_batch(self, images, ids, mask, labels, *, sync_grads: bool = True,
                    where: Any = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward, loss, finite watch and backward (of loss / accumulate) of one micro-batch;
        returns the detached loss and its terms. Never reads a value back to the host."""
        try:
            return self._micro_batch(images, ids, mask, labels, sync_grads, where)
        except Exception as err:
            if self.module.compiled is None or not is_compile_error(err):
                raise
            self._fall_back(err, self._stage)
            return self._micro_batch(images, ids, mask, labels, sync_grads, where)

    def _fall_back(self, err: Exception, stage: str) -> None:
        """Continue eagerly after a compile failure. One that stops the forward pass leaves no
        trace; one in the backward pass (a backward compiled lazily, after a shape change) may
        have accumulated part of this micro-batch's gradients, so the step's gradients are
        dropped (with gradient accumulation, the step's earlier micro-batches with them)."""
        self.module.use_eager()
        if stage == "backward":
            self.optimizer.zero_grad(set_to_none=True)
        if self.ctx is None or self.ctx.is_main:
            reason = " ".join(str(err).split()).split(" Set TORCHDYNAMO_VERBOSE")[0][:200]
            self.log(f"warning: torch.compile failed in the {stage} pass on torch {torch.__version__} "
                     f"({type(err).__name__}: {reason}); training continues without compile "
                     "(docs/BENCHMARKS.md lists the versions that compile; train.compile=false avoids the attempt)")

    def _micro_batch(self, images, ids, mask, labels, sync_grads, where):
        no_sync = not sync_grads and isinstance(self.runner, nn.parallel.DistributedDataParallel)
        with self.runner.no_sync() if no_sync else contextlib.nullcontext():
            self._stage = "forward"
            with autocast(self.device, self.tc.precision):
                losses = self.runner(images, ids, mask, labels)
            self._stage = "backward"
            loss = sum(losses.values())
            self.watch.observe(loss, losses, where)
            (loss / self.tc.accumulate).backward()
        return loss.detach(), {k: v.detach() for k, v in losses.items()}

    def optimizer_step(self) -> None:
        """Clip (train.grad_clip), update, clear the gradients, advance the schedule."""
        if self.tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.tc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def first_bad(self) -> tuple[Any, dict[str, float]] | None:
        """The first non-finite micro-batch so far on any rank (see FiniteWatch), or None."""
        reduce = None
        if self.ctx is not None and self.ctx.enabled:
            def reduce(tensor: torch.Tensor) -> None:
                torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MIN)
        return self.watch.first_bad(reduce)
