"""Bidirectional triplet ranking loss with in-batch negative mining (METHOD.md, Losses 2).

The form is VSE++'s (Faghri et al., 2018) hinge on the hardest in-batch negative, summed over the
image->text and text->image directions, as used on the global and coarse levels by Park et al.
Negatives are only samples of ANOTHER identity: two captions of one person are never pushed apart.
"""

from __future__ import annotations

import torch

NEGATIVES = ("hardest", "semihard")


def negative_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, B) bool, True where sample j has another identity than anchor i."""
    return labels[:, None] != labels[None, :]


def select_negative(
    sim: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor, margin: torch.Tensor | float,
    negatives: str = "hardest",
) -> torch.Tensor:
    """The similarity of the selected negative per anchor.

    sim: (B, B, ...) anchor x candidate similarities; positive: (B, ...) = s(a, a+); valid:
    (B, B) negative mask. `hardest` takes max_n s(a, n). `semihard` (FaceNet, Schroff et al. 2015)
    takes the hardest negative with s(a, n) < s(a, a+) whose hinge is still active
    (s(a, n) > s(a, a+) - margin) and falls back to the hardest one where none exists [ours].
    Anchors without any negative get -inf (the caller drops them).
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    valid = valid.reshape(valid.shape + (1,) * (sim.dim() - 2))
    neg_inf = torch.finfo(sim.dtype).min
    hardest = sim.masked_fill(~valid, neg_inf).amax(dim=1)
    if negatives == "hardest":
        return hardest
    pos = positive.unsqueeze(1)
    semi = valid & (sim < pos) & (sim > pos - (margin.unsqueeze(1) if torch.is_tensor(margin) else margin))
    semihard = sim.masked_fill(~semi, neg_inf).amax(dim=1)
    return torch.where(semi.any(dim=1), semihard, hardest)


def hinge_both_directions(
    sim: torch.Tensor, labels: torch.Tensor, margin: torch.Tensor | float, negatives: str = "hardest",
    weight: torch.Tensor | None = None,
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
        negative = select_negative(s, positive, valid, m, negatives)
        hinge = (m - positive + negative).clamp(min=0)
        if weight is not None:
            hinge = hinge * weight[direction]
        if has_negative.any():
            total = total + hinge[has_negative].mean()
    return total


def ranking_loss(
    sim: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, negatives: str = "hardest",
) -> torch.Tensor:
    """Bidirectional triplet ranking loss L_R on a (B, B) text x image similarity matrix
    (`model.similarity.global_cosines` or `mean_token_cosines` of the batch)."""
    return hinge_both_directions(sim, labels, margin, negatives)

