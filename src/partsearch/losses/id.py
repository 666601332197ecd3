"""Identity (ID) loss with a classifier shared by the image and the text modality.

Park et al. (METHOD.md, Losses 1) apply an identity cross-entropy to the global, coarse and fine
embeddings with one classifier per level that both modalities share, so image and text
embeddings of one person fall into the same class region (as in Zheng et al., "Dual-path
convolutional image-text embeddings", and IRRA's `compute_id`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def id_loss(
    classifier: nn.Module,
    image_feat: torch.Tensor,
    text_feat: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """L_ID = (CE(W x_v, y) + CE(W x_t, y)) / 2 with ONE classifier W for both modalities.

    image_feat, text_feat: (B, D); labels: (B,) contiguous identity labels. The mean over the two
    modalities follows IRRA's `compute_id`.
    """
    image_logits = classifier(image_feat).float()
    text_logits = classifier(text_feat).float()
    return 0.5 * (
        F.cross_entropy(image_logits, labels, label_smoothing=label_smoothing)
        + F.cross_entropy(text_logits, labels, label_smoothing=label_smoothing)
    )
