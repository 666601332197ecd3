"""Commonality-based margin ranking loss L_CMR on the fine parts (METHOD.md, Losses 3).

The idea is Park et al.'s: a part that many people share (black trousers) should be pushed away
from other people's parts with a SMALL margin, so different people who really share it are not
forced apart, while a rare part (a red hat) keeps the full margin. The formula is ours:

    c[a, p] = mean_{n in N(a)} sigmoid((s_p(a, n) - s_p(a, a+) + delta) / T)     (stop-gradient)
    m[a, p] = max(alpha_f * (1 - c[a, p]), m_min)
    L_CMR   = sum over directions of mean_{a, p} [m[a, p] - s_p(a, a+) + s_p(a, n*)]_+

N(a): batch samples of other identities; s_p: cosine of part p across modalities; a+: a's paired
sample; n*: the hardest negative, as in L_R. `commonality="none"` gives the fixed margin alpha_f
(the ablation baseline).

`commonality="weighted"` [ours] keeps the soft-rank margins and also weights each hinge by
w[a, p] = (1 - c[a, p]) / mean(1 - c) (stop-gradient; the mean over the batch's anchors, parts and
directions, so the term keeps its overall size). With hardest negatives a hinge's gradient is +-1
wherever it is active, whatever its margin; on SynthPEDES the hardest negative's part is closer than
the positive's for most anchors and parts (the hinge is active for 99.6-99.8% of them,
docs/ABLATION.md), so no margin can stop the loss pushing apart people who share a part. The
weight can: a common part gets less of the push and a rare one more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from partsearch.losses.ranking import hinge_both_directions, negative_mask
from partsearch.model.similarity import token_cosines

COMMONALITY = ("soft_rank", "weighted", "none")


@dataclass
class CMROutput:
    """loss: scalar; margin, commonality: (2, B, P) per direction (image->text, text->image),
    anchor and part, detached."""

    loss: torch.Tensor
    margin: torch.Tensor
    commonality: torch.Tensor


def commonality(
    part_sim: torch.Tensor, labels: torch.Tensor, delta: float = 0.1, temperature: float = 0.05,
) -> torch.Tensor:
    """c[a, p] for anchors along dim 0 of `part_sim` (B, B, P); returns (B, P), no gradient.

    Anchors with no other identity in the batch get c = 0 (full margin; they have no negative and
    leave the loss anyway).
    """
    part_sim = part_sim.detach()
    positive = torch.diagonal(part_sim, dim1=0, dim2=1).t()  # (B, P)
    soft = torch.sigmoid((part_sim - positive[:, None, :] + delta) / temperature)
    valid = negative_mask(labels).to(soft.dtype)[:, :, None]
    return (soft * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)


def cmr_margin(c: torch.Tensor, alpha: float = 0.2, min_margin: float = 0.05) -> torch.Tensor:
    """m = max(alpha_f (1 - c), m_min), elementwise."""
    return (alpha * (1 - c)).clamp(min=min_margin)


def cmr_loss(
    image_fine: torch.Tensor,
    text_fine: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.2,
    min_margin: float = 0.05,
    delta: float = 0.1,
    temperature: float = 0.05,
    mode: str = "soft_rank",
) -> CMROutput:
    """L_CMR on fine embeddings image_fine, text_fine (B, P, d), L2-normalised; labels (B,)."""
    if mode not in COMMONALITY:
        raise ValueError(f"commonality must be one of {COMMONALITY}, got {mode!r}")
    sim = token_cosines(text_fine, image_fine)  # (B, B, P), rows = texts
    if mode == "none":
        c = sim.new_zeros((2,) + (sim.shape[0], sim.shape[2]))
        margin = torch.full_like(c, alpha)
    else:
        c = torch.stack([
            commonality(sim.transpose(0, 1), labels, delta, temperature),
            commonality(sim, labels, delta, temperature),
        ])
        margin = cmr_margin(c, alpha, min_margin)
    weight = None
    if mode == "weighted":
        rare = 1 - c
        weight = rare / rare.mean().clamp(min=1e-6)
    loss = hinge_both_directions(sim, labels, margin, weight)
    return CMROutput(loss=loss, margin=margin.detach(), commonality=c.detach())

