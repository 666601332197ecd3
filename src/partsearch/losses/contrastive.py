"""Optional global-level contrastive losses of CLIP-based peers [ours, beyond the paper].

- InfoNCE: CLIP's symmetric cross-entropy over in-batch pairs (Radford et al., 2021), with
  same-identity non-pairs removed from the denominator [ours], so that two captions of one
  person are never negatives (as in L_R).
- SDM: IRRA's similarity distribution matching (Jiang & Ye, CVPR 2023, `objectives.compute_sdm`):
  KL(softmax(s / tau) || true matching distribution), both directions, the true distribution
  being uniform over the same-identity samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from partsearch.model.similarity import global_cosines


def infonce_loss(image_global: torch.Tensor, text_global: torch.Tensor, labels: torch.Tensor,
                 temperature: float = 0.02) -> torch.Tensor:
    """(CE_i2t + CE_t2i) / 2 on logits s / tau; image_global, text_global (B, d) L2-normalised."""
    return infonce_from_similarity(global_cosines(text_global, image_global), labels, temperature)


def infonce_from_similarity(sim: torch.Tensor, labels: torch.Tensor, temperature: float = 0.02) -> torch.Tensor:
    """InfoNCE on a `(B, B)` text x image similarity (`model.similarity`'s orientation; pair i =
    image i, text i); the cross-entropies are written with images along the rows."""
    logits = sim.t().float() / temperature
    same = labels[:, None] == labels[None, :]
    off_pair = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    logits = logits.masked_fill(off_pair, float("-inf"))
    target = torch.arange(len(labels), device=labels.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def sdm_loss(image_global: torch.Tensor, text_global: torch.Tensor, labels: torch.Tensor,
             temperature: float = 0.02, epsilon: float = 1e-8) -> torch.Tensor:
    """IRRA's SDM: sum over directions of mean_i KL(p_i || q_i), p_i = softmax_j(s_ij / tau),
    q_ij = 1[y_i = y_j] / #{j: y_j = y_i}."""
    logits = global_cosines(text_global, image_global).t().float() / temperature  # rows = images
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    total = logits.new_zeros(())
    for scores in (logits, logits.t()):
        pred = F.softmax(scores, dim=1)
        total = total + (pred * (F.log_softmax(scores, dim=1) - torch.log(target + epsilon))).sum(1).mean()
    return total
