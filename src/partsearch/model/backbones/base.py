"""The one output contract of every backbone (`BackboneOutput`) and their common behaviour:
freezing and gradient checkpointing (`Backbone`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from partsearch.config import ConfigError


@dataclass


class BackboneOutput:
    """tokens `(B, N, D)`; mask `(B, N)` bool, True = valid token; grid `(h, w)` with
    `N = h*w` for images, None for text."""

    tokens: torch.Tensor
    mask: torch.Tensor
    grid: tuple[int, int] | None


class Backbone(nn.Module):
    """Common behaviour: freezing and gradient checkpointing.

    A subclass sets `out_dim` and lists its `stem()` (input embedding / first convolutions) and
    `stages()` (ResNet stages or transformer layers, input to output). `freeze("N")` freezes the
    stem and the first N stages, `freeze("all")` everything. Frozen modules stay in eval mode even
    when the model trains [ours], so a frozen BatchNorm keeps its running statistics and a frozen
    layer is a fixed feature extractor.
    """

    out_dim: int

    def __init__(self) -> None:
        super().__init__()
        self._frozen: list[nn.Module] = []

    def stem(self) -> list[nn.Module | nn.Parameter]:
        raise NotImplementedError

    def stages(self) -> list[nn.Module]:
        raise NotImplementedError

    def enable_grad_checkpointing(self) -> None:
        """Recompute activations in the backward pass instead of storing them."""
        raise NotImplementedError

    def freeze(self, spec: str, field: str = "freeze") -> None:
        text = str(spec).strip().lower()
        if text in ("", "none"):
            return
        stages = self.stages()
        if text == "all":
            parts: list[nn.Module | nn.Parameter] = [self]
        elif text.isdigit() and int(text) <= len(stages):
            parts = [*self.stem(), *stages[: int(text)]]
        else:
            raise ConfigError(
                f"model.{field}={spec!r}: expected none, all, or a number of first blocks from 0 "
                f"to {len(stages)} (this backbone has {len(stages)})"
            )
        for part in parts:
            params = [part] if isinstance(part, nn.Parameter) else list(part.parameters())
            for param in params:
                param.requires_grad_(False)
            if isinstance(part, nn.Module):
                self._frozen.append(part)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for module in self._frozen:
            nn.Module.train(module, False)
        return self
