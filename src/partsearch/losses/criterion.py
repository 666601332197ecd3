"""The training objective of Park et al. (METHOD.md, Losses 4):

    L = L_ID(g) + L_ID(C) + L_ID(F) + L_R(g) + L_R(C) + lambda L_CMR(F)  [+ InfoNCE + SDM + diversity, ours]

every term weighted by its `LossConfig` value. `forward` returns the WEIGHTED terms by name
(a zero-weight term is neither computed nor returned), so the sum of the dict is the loss, as in
IRRA's dict of named losses. Diagnostics that are not losses go to `last_stats` instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from partsearch.config import ConfigError, LossConfig
from partsearch.losses.cmr import COMMONALITY, cmr_loss
from partsearch.losses.contrastive import infonce_from_similarity, infonce_loss, sdm_loss
from partsearch.losses.correspondence import part_correspondence_loss
from partsearch.losses.diversity import (
    attention_overlap_loss, concentration_loss, diversity_loss, off_diagonal, pairwise_cosine,
)
from partsearch.losses.id import CosineClassifier, id_loss
from partsearch.losses.ranking import ranking_loss
from partsearch.model.similarity import global_cosines, mean_token_cosines, token_cosines

PART_MATCH_LEVELS = ("coarse", "fine")
TERMS = ("id_global", "id_coarse", "id_fine", "rank_global", "rank_coarse", "cmr", "infonce", "sdm", "diversity", "attention_overlap", "concentration", "infonce_fine", "part_match")


def check_loss_config(cfg: LossConfig) -> None:
    """Raise ConfigError for a value the losses cannot use (before any work is done)."""
    if cfg.commonality not in COMMONALITY:
        raise ConfigError(
            f"loss.commonality: unknown value {cfg.commonality!r}; use one of {', '.join(COMMONALITY)}"
        )
    levels = tuple(cfg.part_match_levels)
    if not levels or len(set(levels)) != len(levels) or any(level not in PART_MATCH_LEVELS for level in levels):
        raise ConfigError(f"loss.part_match_levels: expected one or both of {list(PART_MATCH_LEVELS)} "
                          f"without repeats, got {list(levels)}")
    for name in TERMS:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"loss.{name}: a loss weight must be >= 0, got {getattr(cfg, name)}")
    if not any(getattr(cfg, name) > 0 for name in TERMS):
        raise ConfigError("loss: every loss weight is 0; set at least one of " + ", ".join(TERMS))
    for name in ("cmr_temperature", "contrastive_temperature", "id_scale"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"loss.{name}: must be > 0, got {getattr(cfg, name)}")


class PartSearchCriterion(nn.Module):
    """Holds the ID classifiers, each shared by both modalities [paper]; one linear layer for g,
    one for the concatenated coarse set (N_c d), one per fine part [ours], each a cosine
    classifier with scale `loss.id_scale` (see `id.py`) [ours]. A classifier exists
    only when its term's weight is > 0, so no parameter goes unused (DDP requires that).

    `last_stats` [ours]: after each `forward`, detached 0-dim tensors for logging, not losses:
    `cmr_margin` and `cmr_commonality` (means over anchors, parts and directions) when the CMR
    term is on; `coarse_token_cos`, the mean cosine between the image's coarse tokens (1.0 when
    they are copies of one token). They stay tensors so a training step does not synchronise with the GPU; call
    `float()` when logging.
    """

    def __init__(self, loss_cfg: LossConfig, num_classes: int, dim: int, num_coarse: int, num_fine: int):
        super().__init__()
        check_loss_config(loss_cfg)
        self.cfg = loss_cfg
        if loss_cfg.id_global > 0:
            self.classifier_global = CosineClassifier(dim, num_classes, loss_cfg.id_scale)
        if loss_cfg.id_coarse > 0:
            self.classifier_coarse = CosineClassifier(dim * num_coarse, num_classes, loss_cfg.id_scale)
        if loss_cfg.id_fine > 0:
            self.classifier_fine = nn.ModuleList(
                CosineClassifier(dim, num_classes, loss_cfg.id_scale) for _ in range(num_fine)
            )
        self.last_stats: dict[str, torch.Tensor] = {}

    def forward(self, image_emb: Any, text_emb: Any, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """image_emb, text_emb: `Embeddings` (global_ (B, d), coarse (B, N_c, d), fine (B, P, d));
        labels: (B,) contiguous train identities. Returns {term: weight * loss}."""
        cfg = self.cfg
        losses: dict[str, torch.Tensor] = {}
        stats: dict[str, torch.Tensor] = {}
        if cfg.id_global > 0:
            losses["id_global"] = cfg.id_global * id_loss(
                self.classifier_global, image_emb.global_, text_emb.global_, labels)
        if cfg.id_coarse > 0:
            losses["id_coarse"] = cfg.id_coarse * id_loss(
                self.classifier_coarse, image_emb.coarse.flatten(1), text_emb.coarse.flatten(1), labels)
        if cfg.id_fine > 0:
            per_part = [
                id_loss(head, image_emb.fine[:, p], text_emb.fine[:, p], labels)
                for p, head in enumerate(self.classifier_fine)
            ]
            losses["id_fine"] = cfg.id_fine * torch.stack(per_part).mean()
        if cfg.rank_global > 0:
            sim = global_cosines(text_emb.global_.float(), image_emb.global_.float())
            losses["rank_global"] = cfg.rank_global * ranking_loss(sim, labels, cfg.margin)
        if cfg.rank_coarse > 0:
            sim = mean_token_cosines(text_emb.coarse.float(), image_emb.coarse.float())
            losses["rank_coarse"] = cfg.rank_coarse * ranking_loss(sim, labels, cfg.margin)
        if cfg.cmr > 0:
            out = cmr_loss(
                image_emb.fine.float(), text_emb.fine.float(), labels,
                alpha=cfg.cmr_alpha, min_margin=cfg.cmr_min_margin, delta=cfg.cmr_delta,
                temperature=cfg.cmr_temperature, mode=cfg.commonality,
            )
            losses["cmr"] = cfg.cmr * out.loss
            stats["cmr_margin"] = out.margin.mean()
            stats["cmr_commonality"] = out.commonality.mean()
        if cfg.diversity > 0:
            losses["diversity"] = cfg.diversity * torch.stack([
                diversity_loss(image_emb.coarse), diversity_loss(text_emb.coarse), diversity_loss(text_emb.fine),
            ]).mean()
        if cfg.attention_overlap > 0:
            if getattr(image_emb, "attention", None) is None or getattr(text_emb, "attention", None) is None:
                raise ValueError("loss.attention_overlap needs the token attention maps of a model in training mode")
            n_c = image_emb.coarse.shape[1]
            losses["attention_overlap"] = cfg.attention_overlap * torch.stack([
                attention_overlap_loss(image_emb.attention),
                attention_overlap_loss(text_emb.attention[:, :n_c]),
                attention_overlap_loss(text_emb.attention[:, n_c:]),
            ]).mean()
        if cfg.concentration > 0:
            if getattr(image_emb, "attention", None) is None:
                raise ValueError("loss.concentration needs the token attention maps of a model in training mode")
            losses["concentration"] = cfg.concentration * concentration_loss(
                image_emb.attention, tuple(image_emb.foreground.shape[1:]))
        if cfg.part_match > 0:
            tau = cfg.contrastive_temperature
            losses["part_match"] = cfg.part_match * torch.stack([
                part_correspondence_loss(getattr(image_emb, level), getattr(text_emb, level), tau)
                for level in cfg.part_match_levels]).mean()
        with torch.no_grad():
            if getattr(image_emb, "attention", None) is not None:
                stats["coarse_attention_cos"] = off_diagonal(pairwise_cosine(image_emb.attention)).mean()
            stats["coarse_token_cos"] = off_diagonal(pairwise_cosine(image_emb.coarse)).mean()
        if cfg.infonce > 0:
            losses["infonce"] = cfg.infonce * infonce_loss(
                image_emb.global_, text_emb.global_, labels, cfg.contrastive_temperature)
        if cfg.infonce_fine > 0:
            fine_sim = token_cosines(text_emb.fine.float(), image_emb.fine.float())
            losses["infonce_fine"] = cfg.infonce_fine * torch.stack([
                infonce_from_similarity(fine_sim[..., p], labels, cfg.contrastive_temperature)
                for p in range(fine_sim.shape[-1])
            ]).mean()
        if cfg.sdm > 0:
            losses["sdm"] = cfg.sdm * sdm_loss(image_emb.global_, text_emb.global_, labels, cfg.contrastive_temperature)
        self.last_stats = stats
        return losses
