"""Identity (ID) loss with a classifier shared by the image and the text modality.

Park et al. (METHOD.md, Losses 1) apply an identity cross-entropy to the global, coarse and fine
embeddings with one classifier per level that both modalities share, so image and text
embeddings of one person fall into the same class region (as in Zheng et al., "Dual-path
convolutional image-text embeddings", and IRRA's `compute_id`).

Our embeddings are L2-normalised, and a plain linear layer on unit vectors produces logits too
small for the softmax to ever become confident (Wang et al., NormFace, 2017), so the classifier
is a cosine classifier with a fixed scale s: logits = s cos(w_c, x) [ours, after NormFace].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineClassifier(nn.Module):
    """logits `(B, C)` = scale * normalize(x) @ normalize(W).T for x `(B, D)`, W `(C, D)`."""

    def __init__(self, dim: int, num_classes: int, scale: float):
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x.float(), dim=-1) @ F.normalize(self.weight.float(), dim=-1).t()


def id_loss(
    classifier: nn.Module,
    image_feat: torch.Tensor,
    text_feat: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """L_ID = (CE(W x_v, y) + CE(W x_t, y)) / 2 with ONE classifier W for both modalities.

    image_feat, text_feat: (B, D); labels: (B,) contiguous identity labels. The mean over the two
    modalities follows IRRA's `compute_id`.
    """
    image_logits = classifier(image_feat).float()
    text_logits = classifier(text_feat).float()
    return 0.5 * (F.cross_entropy(image_logits, labels) + F.cross_entropy(text_logits, labels))
