"""Optimizer and learning-rate schedule builders (METHOD.md, Training defaults).

Parameter groups: backbone parameters get lr x `backbone_lr_factor`; the new modules and the
criterion's ID classifiers are heads at the full lr. One-dimensional parameters (biases, norm
scales, learnable tokens' scalars) take no weight decay [ours, as open_clip does].

The schedule is per optimizer step (a `LambdaLR`): linear warm-up over `warmup_epochs`, then
cosine to 0 or a step decay by `gamma` at each epoch of `milestones` [ours, after IRRA's
`solver/lr_scheduler.py`]. Its length comes from `epochs` only, never from `max_steps`, so a run
stopped early and resumed follows the same schedule as an uninterrupted one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

import torch
from torch import nn

from partsearch.config import ConfigError, TrainConfig

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULERS = ("cosine", "multistep")
SWITCH = (True, False, "auto")
# What `auto` means for each speed switch of TrainConfig, per device type. CPU: no gain beyond the
# noise (docs/BENCHMARKS.md, section 3). GPU: left as the trainer was (off) until the `switches on`
# row of benchmarks/gpu.sh is measured (section 7).
AUTO = {"channels_last": {"cuda": False, "cpu": False}, "fused_optimizer": {"cuda": False, "cpu": False}}


def switch_on(cfg: TrainConfig, key: str, device: torch.device) -> bool:
    """Whether the speed switch `train.<key>` (true | false | auto) is on for `device`."""
    value = getattr(cfg, key)
    if value == "auto":
        return AUTO[key].get(device.type, False)
    return bool(value)


def check_train_config(cfg: TrainConfig) -> None:
    """Raise ConfigError for a value the trainer cannot use (before any work is done)."""
    choices = {
        "optimizer": tuple(OPTIMIZERS), "scheduler": SCHEDULERS,
        "precision": ("auto", "bf16", "fp32"), "eval_split": ("val", "test"),
        "channels_last": SWITCH, "fused_optimizer": SWITCH,
    }
    for key, options in choices.items():
        if getattr(cfg, key) not in options:
            names = ", ".join(str(o).lower() for o in options)
            raise ConfigError(f"train.{key}: unknown value {getattr(cfg, key)!r}; use one of {names}")
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise ConfigError(f"train.device: unknown value {cfg.device!r}; use auto, cpu, cuda or cuda:N")
    for key in ("epochs", "accumulate", "eval_every", "log_every"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"train.{key}: must be >= 1, got {getattr(cfg, key)}")
    if cfg.nan_check_every < 0:
        raise ConfigError(f"train.nan_check_every: must be >= 0 (0 = at log lines and checkpoints), got {cfg.nan_check_every}")
    if cfg.lr <= 0:
        raise ConfigError(f"train.lr: must be > 0, got {cfg.lr}")
    if not 0 <= cfg.warmup_epochs < cfg.epochs:
        raise ConfigError(
            f"train.warmup_epochs: must be in [0, epochs={cfg.epochs}), got {cfg.warmup_epochs}"
        )


def _split_decay(params: Iterable[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def build_optimizer(cfg: TrainConfig, model: nn.Module, criterion: nn.Module) -> torch.optim.Optimizer:
    """Adam/AdamW over `model.param_groups()` plus the criterion's classifiers (heads).

    Groups are named (`backbone`, `heads`, and `*_no_decay`); frozen parameters are left out.
    With `train.fused_optimizer` on for the parameters' device, torch's fused kernel does the
    update (the same formula, one kernel for all parameters instead of a loop or foreach ops).
    """
    named = model.param_groups()
    sources = {
        "backbone": (list(named["backbone"]), cfg.lr * cfg.backbone_lr_factor),
        "heads": (list(named["heads"]) + list(criterion.parameters()), cfg.lr),
    }
    groups = []
    for name, (params, lr) in sources.items():
        decay, no_decay = _split_decay(params)
        if decay:
            groups.append({"name": name, "params": decay, "lr": lr, "weight_decay": cfg.weight_decay})
        if no_decay:
            groups.append({"name": f"{name}_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0})
    if not groups:
        raise ConfigError("nothing to train: every parameter is frozen (model.freeze_image / freeze_text)")
    device = groups[0]["params"][0].device
    fused = True if switch_on(cfg, "fused_optimizer", device) else None
    return OPTIMIZERS[cfg.optimizer](groups, lr=cfg.lr, fused=fused)


def lr_multiplier(cfg: TrainConfig, steps_per_epoch: int):
    """The schedule as a function of the optimizer step (0-based) -> lr / base lr."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = max(cfg.epochs * steps_per_epoch, warmup + 1)
    milestones = sorted(m * steps_per_epoch for m in cfg.milestones)

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "cosine":
            progress = min((step - warmup) / (total - warmup), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.gamma ** bisect.bisect_right(milestones, step)

    return multiplier


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Per-step LambdaLR: warm-up then cosine or multistep (see the module docstring)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, steps_per_epoch))
