"""The coarse-to-fine model: backbones -> encoders -> shared decoder -> Embeddings.

Park et al., *Improving Text-based Person Search via Part-level Cross-modal Correspondence*
(METHOD.md, Architecture): per modality a global embedding (GMP), N_c coarse embeddings read by
query tokens shared with the other modality, and P fine embeddings (image: foreground-weighted
horizontal stripes; text: P learnable fine tokens through the same shared decoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from partsearch.config import Config, ConfigError, ModelConfig
from partsearch.model.backbones import BackboneOutput, build_image_backbone, build_text_backbone
from partsearch.model.decoder import SharedDecoder, query_tokens
from partsearch.model.encoders import ModalityEncoder, global_max_pool
from partsearch.model.fine import foreground_map, stripe_bounds, stripe_pool


@dataclass
class Embeddings:
    """L2-normalised embeddings of one modality: global_ `(B, d)`, coarse `(B, N_c, d)`,
    fine `(B, P, d)`; foreground `(B, h, w)` (max 1 per image) for images, None for text.
    `global_` has a trailing underscore only because `global` is a Python keyword.
    `attention` (training only, for the token diversity loss): each query token's cross-attention
    over the memory `(B, T, N)`, averaged over heads and layers; T = N_c for images, N_c + P
    (coarse, then fine) for texts."""

    global_: torch.Tensor
    coarse: torch.Tensor
    fine: torch.Tensor
    foreground: torch.Tensor | None = None
    attention: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Embeddings:
        fg = None if self.foreground is None else self.foreground.to(device)
        return Embeddings(self.global_.to(device), self.coarse.to(device), self.fine.to(device), fg)

    @staticmethod
    def cat(parts: list[Embeddings]) -> Embeddings:
        """Concatenate batches along B."""
        fg = None if parts[0].foreground is None else torch.cat([p.foreground for p in parts])
        return Embeddings(
            torch.cat([p.global_ for p in parts]), torch.cat([p.coarse for p in parts]), torch.cat([p.fine for p in parts]), fg
        )


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


FINE_SOURCES = ("memory", "projected")


class PartSearchModel(nn.Module):
    """`encode_image(images (B, 3, H, W))`, `encode_text(ids (B, L), mask (B, L))` -> Embeddings.

    `shared_decoder` (its layers and its `coarse_queries`) is one module used by both
    modalities; `fine_text_queries` `(P, d)` are the text's fine tokens.
    """

    def __init__(self, model_cfg: ModelConfig, image_size: tuple[int, int], vocab_size: int) -> None:
        super().__init__()
        cfg = model_cfg
        for field in ("encoder_heads", "decoder_heads"):
            if cfg.dim % getattr(cfg, field):
                raise ConfigError(f"model.dim={cfg.dim} must be a multiple of model.{field}={getattr(cfg, field)}")
        self.num_fine = cfg.num_fine
        self.image_backbone = build_image_backbone(cfg, image_size)
        self.text_backbone = build_text_backbone(cfg, vocab_size)
        self.grid: tuple[int, int] = self.image_backbone.grid
        self.image_encoder = ModalityEncoder(
            self.image_backbone.out_dim, cfg.dim, cfg.encoder_layers, cfg.encoder_heads, cfg.dropout, grid=self.grid,
            attention_dropout=cfg.attention_dropout,
        )
        self.text_encoder = ModalityEncoder(self.text_backbone.out_dim, cfg.dim, cfg.encoder_layers, cfg.encoder_heads,
                                            cfg.dropout, attention_dropout=cfg.attention_dropout)
        if cfg.fine_source not in FINE_SOURCES:
            raise ConfigError(f"model.fine_source: unknown value {cfg.fine_source!r}; use one of {', '.join(FINE_SOURCES)}")
        if not cfg.query_init_std > 0:
            raise ConfigError(f"model.query_init_std must be > 0, got {cfg.query_init_std}")
        self.fine_source = cfg.fine_source
        self.shared_decoder = SharedDecoder(
            cfg.dim, cfg.num_coarse, cfg.decoder_layers, cfg.decoder_heads, cfg.dropout, cfg.query_init_std,
            attention_dropout=cfg.attention_dropout)
        self.fine_foreground = cfg.fine_foreground
        self.fine_text_queries = query_tokens(cfg.num_fine, cfg.dim, cfg.query_init_std)

    def encode_image(self, images: torch.Tensor, keep_attention: bool = False) -> Embeddings:
        """`keep_attention` also returns each coarse token's attention map (always in training)."""
        return self.image_heads(self.image_backbone(images), keep_attention)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> Embeddings:
        return self.text_heads(self.text_backbone(ids, mask))

    def image_heads(self, out: BackboneOutput, keep_attention: bool = False) -> Embeddings:
        """Everything after the image backbone (split out so benchmarks can time the heads)."""
        # Image tokens are all valid, so no mask: attention keeps its fast kernels.
        projected, memory = self.image_encoder(out.tokens)
        decoded = self.shared_decoder(memory, need_weights=True)
        coarse, foreground = decoded.coarse, foreground_map(decoded.attention, out.grid)
        # [ours] the map is shaped by the coarse tokens alone: the fine losses do not reach it
        # through the stripe pooling (METHOD.md, "Making the parts form")
        weights = foreground.detach() if self.fine_foreground else None
        fine = stripe_pool(memory if self.fine_source == "memory" else projected, weights, self.num_fine, out.grid)
        keep = self.training or keep_attention
        return Embeddings(_normalize(global_max_pool(projected)), _normalize(coarse), _normalize(fine), foreground,
                          decoded.attention if keep else None)

    @torch.no_grad()
    def token_attention(self, images: torch.Tensor) -> torch.Tensor:
        """Each coarse token's cross-attention over the image `(B, N_c, h, w)`, averaged over
        heads and decoder layers (each map sums to 1): what each shared token looks at."""
        return self.encode_image(images, keep_attention=True).attention.float().unflatten(2, self.grid)

    def text_heads(self, out: BackboneOutput) -> Embeddings:
        """Everything after the text backbone."""
        projected, memory = self.text_encoder(out.tokens, out.mask)
        decoded = self.shared_decoder(memory, out.mask, fine_queries=self.fine_text_queries, need_weights=self.training)
        attention = torch.cat([decoded.attention, decoded.fine_attention], dim=1) if self.training else None
        return Embeddings(_normalize(global_max_pool(projected, out.mask)), _normalize(decoded.coarse),
                          _normalize(decoded.fine), attention=attention)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[Embeddings, Embeddings]:
        return self.encode_image(images), self.encode_text(ids, mask)

    def stripe_rows(self) -> list[tuple[int, int]]:
        """Row ranges `[start, end)` of the P image stripes on the token grid (of `self.grid[0]`
        rows), for heatmaps that explain each part; multiply by H / grid[0] for pixels."""
        return stripe_bounds(self.grid[0], self.num_fine)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: "backbone" (both backbones, for the lower learning rate) and
        "heads" (everything else). Frozen parameters are left out."""
        backbone_ids = {id(p) for m in (self.image_backbone, self.text_backbone) for p in m.parameters()}
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "heads": []}
        for param in self.parameters():
            if param.requires_grad:
                groups["backbone" if id(param) in backbone_ids else "heads"].append(param)
        return groups


def build_model(cfg: Config, vocab_size: int) -> PartSearchModel:
    """The model of a whole config at its `data.image_size`."""
    return PartSearchModel(cfg.model, tuple(cfg.data.image_size), vocab_size)
