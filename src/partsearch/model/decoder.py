"""The modality-shared decoder (METHOD.md, Architecture 4-5).

[paper] One transformer decoder whose weights AND whose N_c learnable coarse query tokens are
shared by the image and the text: C_v = Dec(Q_c, M_v), C_t = Dec(Q_c, M_t). Because one token
reads both modalities, token j comes to stand for the same entity in both, without alignment
labels. The text's P fine tokens read M_t through the same decoder. [ours] 2 pre-norm layers of
self-attention among the queries, cross-attention to the memory, feed-forward; 8 heads. The fine
tokens run in the same pass as the coarse ones (the memory's keys and values are projected once)
with a block-diagonal self-attention mask, so each group sees only itself: the result is that of
two separate passes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from partsearch.model.encoders import Attention, Dropout, FeedForward, key_padding


class DecoderOutput(NamedTuple):
    """coarse `(B, N_c, d)`; fine `(B, P, d)` when fine queries were given; attention
    `(B, N_c, N)` when asked for: each coarse token's cross-attention weights averaged over heads
    and layers (each row sums to 1 over the memory); their mean over tokens is the raw foreground
    map. fine_attention `(B, P, N)`: the same for the fine queries, when given and asked for."""

    coarse: torch.Tensor
    fine: torch.Tensor | None
    attention: torch.Tensor | None
    fine_attention: torch.Tensor | None = None


def query_tokens(count: int, dim: int, std: float) -> nn.Parameter:
    """`(count, dim)` learnable query tokens, truncated normal at `std` (cut at 2 std)."""
    tokens = nn.Parameter(torch.zeros(count, dim))
    nn.init.trunc_normal_(tokens, std=std, a=-2 * std, b=2 * std)
    return tokens


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float | None = None) -> None:
        super().__init__()
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, attention_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads, attention_dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, dropout)
        self.drop = Dropout(dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor | None, memory_mask: torch.Tensor | None,
        need_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, self_mask)[0])
        out, weights = self.cross_attn(self.norm2(x), memory, memory_mask, need_weights)
        x = x + self.drop(out)
        return x + self.drop(self.ffn(self.norm3(x))), weights


class SharedDecoder(nn.Module):
    """`forward(memory (B, N, d), memory_mask (B, N) | None, fine_queries (P, d) | None,
    need_weights) -> DecoderOutput`; `coarse_queries` `(N_c, d)` are the shared tokens Q_c;
    `attention_dropout` (None: `dropout`) is the dropout on the attention weights."""

    def __init__(self, dim: int, num_coarse: int, layers: int, heads: int, dropout: float,
                 query_init_std: float = 0.02, attention_dropout: float | None = None) -> None:
        super().__init__()
        self.coarse_queries = query_tokens(num_coarse, dim, query_init_std)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, dropout, attention_dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        fine_queries: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> DecoderOutput:
        n_c = self.coarse_queries.shape[0]
        queries, self_mask = self.coarse_queries, None
        if fine_queries is not None:
            queries = torch.cat([queries, fine_queries])
            # int8, not bool: inductor's range analysis in torch 2.11 fails on `==` between two
            # boolean tensors (pytorch#188231, fixed by #191886 in 2.14), which broke torch.compile
            group = (torch.arange(len(queries), device=memory.device) >= n_c).to(torch.int8)
            self_mask = group[:, None] == group[None, :]
        # A copy, not an expand() view: a view of a parameter made under no_grad still claims
        # requires_grad without a grad_fn, which trips module hooks (FlopCounterMode, DDP).
        x = queries.to(memory.dtype).repeat(memory.shape[0], 1, 1)
        memory_mask = key_padding(memory_mask)
        attention = None
        for layer in self.layers:
            x, weights = layer(x, memory, self_mask, memory_mask, need_weights)
            if need_weights:
                mean = weights.mean(dim=1)
                attention = mean if attention is None else attention + mean
        fine_attention = None
        if attention is not None:
            attention = attention / len(self.layers)
            fine_attention = attention[:, n_c:] if fine_queries is not None else None
            attention = attention[:, :n_c]
        x = self.norm(x)
        return DecoderOutput(x[:, :n_c], x[:, n_c:] if fine_queries is not None else None, attention, fine_attention)
