"""Commonality-based margin ranking loss L_CMR on the fine parts (METHOD.md, Losses 3).

The idea is Park et al.'s: a part that many people share (black trousers) should be pushed away
from other people's parts with a SMALL margin, so different people who really share it are not
forced apart, while a rare part (a red hat) keeps the full margin. The formula is ours:

    c[a, p] = mean_{n in N(a)} sigmoid((s_p(a, n) - s_p(a, a+) + delta) / T)     (stop-gradient)
    m[a, p] = max(alpha_f * (1 - c[a, p]), m_min)
    L_CMR   = sum over directions of mean_{a, p} [m[a, p] - s_p(a, a+) + s_p(a, n*)]_+

N(a): batch samples of other identities; s_p: cosine of part p across modalities; a+: a's paired
sample; n*: the negative chosen as in L_R (hardest by default). `commonality="none"` gives the
fixed margin alpha_f (the ablation baseline).

`commonality="per_pair"` [ours] keeps the commonality of each (anchor, negative) pair instead of
averaging it over N(a), so the margin belongs to the pair:

    c[a, n, p] = sigmoid((s_p(a, n) - s_p(a, a+) + delta) / T)                   (stop-gradient)
    L_CMR      = sum over directions of mean_{a, p} max_{n in N(a)} [m[a, n, p] - s_p(a, a+) + s_p(a, n)]_+

The soft-rank mean was diluted on SynthPEDES: commonality 0.61-0.90 at its 10-90% quantiles put
nearly every margin at the floor m_min (docs/ABLATION.md). Per pair, a negative as close as the
positive gets the floor and one delta below it gets alpha_f / 2. With the defaults (alpha_f = 2 delta,
T = delta / 2) m + s never decreases in s, so the hardest negative is the same one L_R picks; what
the pair's margin changes is where its hinge switches off (at a gap s(a, a+) - s(a, n*) of delta).
Only `negatives: hardest` is defined for it.

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

COMMONALITY = ("soft_rank", "per_pair", "weighted", "none")


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
    negatives: str = "hardest",
) -> CMROutput:
    """L_CMR on fine embeddings image_fine, text_fine (B, P, d), L2-normalised; labels (B,)."""
    if mode not in COMMONALITY:
        raise ValueError(f"commonality must be one of {COMMONALITY}, got {mode!r}")
    sim = token_cosines(text_fine, image_fine)  # (B, B, P), rows = texts
    if mode == "per_pair":
        return _per_pair_cmr(sim, labels, alpha, min_margin, delta, temperature)
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
    loss = hinge_both_directions(sim, labels, margin, negatives, weight)
    return CMROutput(loss=loss, margin=margin.detach(), commonality=c.detach())


def _per_pair_cmr(sim: torch.Tensor, labels: torch.Tensor, alpha: float, min_margin: float, delta: float,
                  temperature: float) -> CMROutput:
    """The per-pair variant (module docstring) on a (B, B, P) texts x images part similarity."""
    valid = negative_mask(labels)
    has_negative = valid.any(dim=1)
    total = sim.new_zeros(())
    margins, commonalities = [], []
    for s in (sim.transpose(0, 1), sim):  # image -> text anchors, then text -> image
        positive = torch.diagonal(s, dim1=0, dim2=1).t()  # (B, P)
        c = torch.sigmoid((s.detach() - positive.detach()[:, None, :] + delta) / temperature)  # (B, B, P)
        m = cmr_margin(c, alpha, min_margin)
        hinge = (m - positive[:, None, :] + s).masked_fill(~valid[:, :, None], torch.finfo(s.dtype).min)
        worst = hinge.argmax(dim=1, keepdim=True)  # the negative with the largest hinge, per anchor and part
        if has_negative.any():
            total = total + hinge.gather(1, worst).squeeze(1)[has_negative].clamp(min=0).mean()
        margins.append(m.gather(1, worst).squeeze(1))
        commonalities.append(c.gather(1, worst).squeeze(1))
    return CMROutput(loss=total, margin=torch.stack(margins).detach(), commonality=torch.stack(commonalities).detach())
