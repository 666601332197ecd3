"""The frozen text prefix, computed once per caption while training [ours].

With `model.freeze_text: "K"` the text backbone's embeddings and first K layers are frozen and in
eval mode (`Backbone.freeze`), so their output for a caption never changes during a run: it is a
function of the caption's tokens and of weights that do not train. Yet every step ran them again
for every caption of the batch (on the demo's MiniLM-L6 with K = 5, five sixths of the text
forward). `FrozenTextPrefix` keeps each caption's hidden states after layer K (keyed by its token
ids up to its last real token; the weights and K are fixed for the object's life, which is one
training process), and a step runs only the layers after K on them. The states at real positions
are those the full forward computes (padding is masked in every layer, so it does not reach
them); the backward pass is unchanged, since nothing before layer K+1 has a gradient.

It works on a `transformers` encoder (`backbone.net` with `.embeddings` and `.encoder.layer`, the
`Bert` backbone) without changing its module tree: while the text backbone runs, its encoder holds
only the trainable layers and the embeddings' output is replaced by the cached states. Evaluation
(the model in eval mode) runs the whole backbone as always. `train.cache_frozen_text` turns it off;
it is off under `train.compile` (the compiler would trace the swap).
"""

from __future__ import annotations

import torch
from torch import nn


class FrozenTextPrefix:
    """Caches the output of the first `frozen` layers of `backbone.net` per caption, in training."""

    def __init__(self, backbone: nn.Module, frozen: int):
        layers = backbone.net.encoder.layer
        if not 0 < frozen <= len(layers):
            raise ValueError(f"frozen={frozen}: the text backbone has {len(layers)} layers")
        self.backbone, self.frozen = backbone, frozen
        self.layers = layers
        self.states: dict[bytes, torch.Tensor] = {}  # token ids up to the last real one -> (n, D)
        self.hits = self.misses = 0
        self._restore: list = []
        self._handles = [backbone.register_forward_pre_hook(self._before),
                         backbone.register_forward_hook(self._after, always_call=True)]

    @classmethod
    def attach(cls, model: nn.Module, cfg) -> FrozenTextPrefix | None:
        """The cache for `model`'s text backbone when the config freezes a prefix of a
        transformers encoder and `train.cache_frozen_text` is on; None otherwise."""
        spec = str(cfg.model.freeze_text).strip().lower()
        net = getattr(getattr(model, "text_backbone", None), "net", None)
        if not cfg.train.cache_frozen_text or cfg.train.compile or not spec.isdigit() or int(spec) == 0:
            return None
        if not (hasattr(net, "embeddings") and hasattr(getattr(net, "encoder", None), "layer")):
            return None
        return cls(model.text_backbone, int(spec))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _keys(self, ids: torch.Tensor, mask: torch.Tensor) -> list[bytes]:
        lengths = mask.long().sum(dim=1).tolist()
        rows = ids.detach().cpu()
        return [rows[i, :n].numpy().tobytes() for i, n in enumerate(lengths)]

    def _run(self, layers, ids: torch.Tensor, mask: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """`backbone.net` over `layers` only, from the embeddings or from `start` states."""
        net = self.backbone.net
        net.encoder.layer = nn.ModuleList(layers)
        hook = None if start is None else net.embeddings.register_forward_hook(lambda module, args, out: start)
        try:
            return net(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        finally:
            net.encoder.layer = self.layers
            if hook is not None:
                hook.remove()

    def _before(self, module: nn.Module, args):
        if not module.training:
            return None
        ids, mask = args
        keys = self._keys(ids, mask)
        missing = [i for i, key in enumerate(keys) if key not in self.states]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            rows = torch.tensor(missing, device=ids.device)
            with torch.no_grad():
                states = self._run(self.layers[: self.frozen], ids[rows], mask[rows])
            lengths = mask[rows].long().sum(dim=1).tolist()
            for i, state, n in zip(missing, states, lengths):
                self.states[keys[i]] = state[:n].clone()
        start = ids.new_zeros((*ids.shape, self.states[keys[0]].shape[-1]), dtype=self.states[keys[0]].dtype)
        for i, key in enumerate(keys):
            cached = self.states[key]
            start[i, : len(cached)] = cached
        start = start.to(dtype=next(self.backbone.parameters()).dtype)
        net = self.backbone.net
        net.encoder.layer = nn.ModuleList(self.layers[self.frozen:])
        self._restore.append(net.embeddings.register_forward_hook(lambda m, a, out: start))
        return None

    def _after(self, module: nn.Module, args, output):
        if self._restore:
            self._restore.pop().remove()
            module.net.encoder.layer = self.layers
        return None
