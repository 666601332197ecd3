"""The modality-shared decoder (METHOD.md, Architecture 4).

[paper] One transformer decoder whose weights AND whose N_c learnable coarse query tokens are
shared by the image and the text: C_v = Dec(Q_c, M_v), C_t = Dec(Q_c, M_t). Because one token
reads both modalities, token j comes to stand for the same entity in both, without alignment
labels. [ours] 2 pre-norm layers of self-attention among the queries, cross-attention to the
memory, feed-forward; 8 heads.
"""

from __future__ import annotations

import torch
from torch import nn

from partsearch.model.encoders import Attention, FeedForward


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h)[0])
        out, weights = self.cross_attn(self.norm2(x), memory, memory_mask, need_weights)
        x = x + self.drop(out)
        return x + self.drop(self.ffn(self.norm3(x))), weights


class SharedDecoder(nn.Module):
    """`forward(memory (B, N, d), memory_mask (B, N) | None, queries (Q, d) | None, need_weights)
    -> (tokens (B, Q, d), attention (B, N) | None)`.

    `queries=None` uses the shared coarse tokens Q_c (`coarse_queries`, `(N_c, d)`); the text's
    fine tokens pass their own. With `need_weights`, `attention` is the cross-attention weights
    averaged over heads, queries and layers (each row sums to 1 over the N memory positions):
    the raw foreground map of METHOD.md, Architecture 5.
    """

    def __init__(self, dim: int, num_coarse: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.coarse_queries = nn.Parameter(torch.zeros(num_coarse, dim))
        nn.init.trunc_normal_(self.coarse_queries, std=0.02)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        queries: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        queries = self.coarse_queries if queries is None else queries
        x = queries.to(memory.dtype).expand(memory.shape[0], -1, -1)
        attention = None
        for layer in self.layers:
            x, weights = layer(x, memory, memory_mask, need_weights)
            if need_weights:
                mean = weights.mean(dim=(1, 2))
                attention = mean if attention is None else attention + mean
        if attention is not None:
            attention = attention / len(self.layers)
        return self.norm(x), attention
