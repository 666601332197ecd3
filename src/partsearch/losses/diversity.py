"""Token diversity [ours, not in the paper] (METHOD.md, Losses 6).

The shared coarse tokens and the text's fine tokens are meant to stand for different body parts,
but nothing in the paper's losses tells them apart: the coarse ranking loss averages the
token-wise cosines and the coarse ID loss reads their concatenation, both symmetric in the tokens,
so the cheapest solution is N_c copies of one global embedding (measured: pairwise cosine 1.00).
Three terms, each a config weight:
- `diversity`: the mean squared cosine between the different tokens' EMBEDDINGS of one sample,
  zero when they are orthogonal, one when they are copies;
- `attention_overlap`: the mean cosine between the different tokens' ATTENTION maps over the
  memory (image positions, words), one when they read the same places, zero when they read
  disjoint ones. Distinct embeddings alone can be had by reading the same average through
  different projections (measured: coarse embeddings at cosine 0.50 with six attention maps that
  split over the body regions alike); this term makes each token read its own part of the image
  and of the sentence. It does not push any token onto the background: disjoint maps may all lie
  on the person. Nor does it keep one off it: a token that reads the floor overlaps no token on
  the person, and in the footage config two of six did (METHOD.md, "Making the parts form", 9);
- `concentration`: the spatial variance of each coarse token's attention map over the image
  [ours, after the concentration loss of SCOPS, Hung et al., CVPR 2019], so each token reads one
  compact place. The floor around a person is not one place and changes from image to image, so
  a compact token settles on a part of the person.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_cosine(tokens: torch.Tensor) -> torch.Tensor:
    """tokens `(B, T, d)` -> `(B, T, T)` cosines between the tokens of each sample."""
    unit = F.normalize(tokens.float(), dim=-1)
    return unit @ unit.transpose(1, 2)


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """`(..., T, T)` -> `(..., T * (T - 1))`: the entries off the diagonal."""
    t = matrix.shape[-1]
    keep = ~torch.eye(t, dtype=torch.bool, device=matrix.device)
    return matrix[..., keep]


def diversity_loss(tokens: torch.Tensor) -> torch.Tensor:
    """mean over samples and token pairs j != k of cos(x_j, x_k)^2 for tokens `(B, T, d)`."""
    if tokens.shape[1] < 2:
        return tokens.new_zeros((), dtype=torch.float32)
    return off_diagonal(pairwise_cosine(tokens)).pow(2).mean()


def attention_overlap_loss(attention: torch.Tensor) -> torch.Tensor:
    """mean over samples and token pairs j != k of the cosine between attention maps a_j, a_k
    `(B, T, N)` (non-negative, so the cosine lies in [0, 1])."""
    if attention.shape[1] < 2:
        return attention.new_zeros((), dtype=torch.float32)
    return off_diagonal(pairwise_cosine(attention)).mean()


def concentration_loss(attention: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """mean over samples and tokens of the spatial variance of each token's attention map
    `(B, T, h*w)` (each summing to 1) over the image grid `(h, w)`, with rows and columns at their
    centres in [0, 1]: about 1/6 for a uniform map, 0 for a single cell [ours, after the
    concentration loss of SCOPS, Hung et al., CVPR 2019]."""
    maps = attention.float().unflatten(2, grid)

    def spread(marginal: torch.Tensor) -> torch.Tensor:  # variance of a (B, T, n) distribution over n centres
        n = marginal.shape[-1]
        centres = (torch.arange(n, device=marginal.device, dtype=marginal.dtype) + 0.5) / n
        return (marginal * centres.square()).sum(-1) - (marginal * centres).sum(-1).square()

    return (spread(maps.sum(dim=3)) + spread(maps.sum(dim=2))).mean()
