"""Global pooling, attention blocks and the per-modality encoders (METHOD.md, Architecture 2-3).

Both modalities are projected to the shared width d; the global embedding is the global max
pooling (GMP) of the projected tokens [paper]; the image tokens get a learnable positional
encoding and both pass through multi-head self-attention layers, giving the memories M_v, M_t
[paper]. [ours]: pre-norm transformer layers (1 layer, 8 heads by default), a linear projection.

Dropout in the heads is `dropout` / `Dropout`: on the CPU its keep mask is drawn four elements to
one random 64-bit word, where torch's own draws one random number per element (the same Bernoulli
keep rate and scale, a different random stream; docs/BENCHMARKS.md section 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from partsearch.errors import DataError


#: False puts the heads back on torch's own dropout and fused attention on the CPU too, as runs
#: before 2026-12-06 drew it (`python -m benchmarks step-profile` times that as its "before").
CPU_WORD_DROPOUT = True


def _word_dropout(device: torch.device) -> bool:
    """Whether dropout on `device` draws four keep decisions per random word (`dropout`)."""
    return device.type == "cpu" and CPU_WORD_DROPOUT and not torch.compiler.is_compiling()


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)`: zero each element with probability p, scale the rest by
    1 / (1 - p). On the CPU (outside torch.compile) the keep mask comes from random 16-bit lanes,
    four per 64-bit draw of the default generator, kept where the lane is at least p * 65536
    above its minimum: the keep rate is 1 - p to within 2^-17, and the draw takes a quarter of
    the generator's work. `F.dropout` elsewhere (a GPU's generator is not the bottleneck)."""
    if not training or p == 0.0:
        return x
    if p >= 1.0 or not _word_dropout(x.device):
        return F.dropout(x, p, training)
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    keep = words.view(torch.int16)[:n].view(x.shape) >= round(p * 65536) - 32768
    return x * (keep.to(x.dtype) * (1.0 / (1.0 - p)))


class Dropout(nn.Dropout):
    """`nn.Dropout` through `dropout` (the same module, state and repr)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def global_max_pool(tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """GMP over the valid tokens: tokens `(B, N, D)`, mask `(B, N)` bool (None = all valid) -> `(B, D)`."""
    if mask is not None:
        tokens = tokens.masked_fill(~mask[..., None], torch.finfo(tokens.dtype).min)
    return tokens.amax(dim=1)


class Attention(nn.Module):
    """Multi-head attention of `query (B, Q, d)` over `key_value (B, N, d)`.

    Uses `F.scaled_dot_product_attention` unless the attention weights are asked for, or dropout
    applies on the CPU (whose SDPA then falls back to its unfused path anyway, and draws the mask
    one element at a time); then the weights are computed once, explicitly (softmax in fp32,
    autocast-safe), and reused for the output, so attention never runs twice.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(
        self, query: torch.Tensor, key_value: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """mask: bool, True = attend, broadcastable to `(B, heads, Q, N)` (see `key_padding`).
        Returns `(B, Q, d)` and, with need_weights, the weights `(B, heads, Q, N)` in fp32
        (before dropout)."""
        q = self._split(self.q(query))
        k, v = (self._split(t) for t in self.kv(key_value).chunk(2, dim=-1))
        p = self.dropout if self.training else 0.0
        if need_weights or (p > 0 and _word_dropout(q.device)):
            scores = (q @ k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = dropout(weights, p, self.training).to(v.dtype) @ v
            weights = weights if need_weights else None
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out(out.transpose(1, 2).flatten(2)), weights


def key_padding(mask: torch.Tensor | None) -> torch.Tensor | None:
    """`(B, N)` token mask -> an attention mask `(B, 1, 1, N)` that hides padded keys."""
    return None if mask is None else mask[:, None, None, :]


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, 4 * dim), nn.GELU(), Dropout(dropout), nn.Linear(4 * dim, dim))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + feed-forward, with residuals [ours: pre-norm]; `attention_dropout`
    (None: `dropout`) is the dropout on the attention weights."""

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout if attention_dropout is None else attention_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, dropout)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, mask)[0])
        return x + self.drop(self.ffn(self.norm2(x)))


class ModalityEncoder(nn.Module):
    """Projection to d, then (image only) a learnable positional encoding, then self-attention.

    `forward(tokens (B, N, D_in), mask (B, N) | None) -> (projected (B, N, d), memory (B, N, d))`:
    `projected` is what GMP pools into the global embedding, `memory` is M_v or M_t.
    `grid=(h, w)` makes it an image encoder with a positional encoding of `h*w` positions.
    """

    def __init__(self, in_dim: int, dim: int, layers: int, heads: int, dropout: float, grid: tuple[int, int] | None = None,
                 attention_dropout: float | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.grid = grid
        self.pos = None
        if grid is not None:
            self.pos = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
            nn.init.trunc_normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, dropout, attention_dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.proj(tokens)
        x = projected
        if self.pos is not None:
            if x.shape[1] != self.pos.shape[1]:
                raise DataError(f"image gives {x.shape[1]} tokens but the model was built for a {self.grid} grid; resize images to the configured data.image_size")
            x = x + self.pos
        attn_mask = key_padding(mask)
        for layer in self.layers:
            x = layer(x, attn_mask)
        return projected, self.norm(x)
