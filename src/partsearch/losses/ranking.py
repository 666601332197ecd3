"""Bidirectional triplet ranking loss with in-batch negative mining (METHOD.md, Losses 2).

The form is VSE++'s (Faghri et al., 2018) hinge on the hardest in-batch negative, summed over the
image->text and text->image directions, as used on the global and coarse levels by Park et al.
Negatives are only samples of ANOTHER identity: two captions of one person are never pushed apart.
"""

from __future__ import annotations

import torch

def negative_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, B) bool, True where sample j has another identity than anchor i."""
    return labels[:, None] != labels[None, :]


def hardest_negative(sim: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """max_n s(a, n) per anchor: sim (B, B, ...) anchor x candidate similarities; valid (B, B)
    negative mask. Anchors without any negative get -inf (the caller drops them)."""
    valid = valid.reshape(valid.shape + (1,) * (sim.dim() - 2))
    return sim.masked_fill(~valid, torch.finfo(sim.dtype).min).amax(dim=1)


def hinge_both_directions(
    sim: torch.Tensor, labels: torch.Tensor, margin: torch.Tensor | float, weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """sum over directions of mean_a [m - s(a, a+) + s(a, n*)]_+.

    sim: (B, B, ...) with rows = texts, columns = images (`model.similarity`'s orientation); pair
    i is (image i, text i). The image->text direction anchors on images, so it reads `sim`
    transposed. Trailing dimensions (e.g. parts) are averaged too. margin: a float or a tensor
    (2, B, ...) holding the image->text and the text->image margins; weight: None or a tensor of
    the margin's shape multiplying each hinge. Anchors with no negative in the batch are left out.
    """
    valid = negative_mask(labels)
    has_negative = valid.any(dim=1)
    total = sim.new_zeros(())
    for direction, s in enumerate((sim.transpose(0, 1), sim)):
        positive = torch.diagonal(s, dim1=0, dim2=1)
        positive = positive.movedim(-1, 0)  # (B, ...)
        m = margin[direction] if torch.is_tensor(margin) else margin
        negative = hardest_negative(s, valid)
        hinge = (m - positive + negative).clamp(min=0)
        if weight is not None:
            hinge = hinge * weight[direction]
        if has_negative.any():
            total = total + hinge[has_negative].mean()
    return total


def ranking_loss(sim: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Bidirectional triplet ranking loss L_R on a (B, B) text x image similarity matrix
    (`model.similarity.global_cosines` or `mean_token_cosines` of the batch)."""
    return hinge_both_directions(sim, labels, margin)

