"""Image-text similarity and its folding into one inner product (METHOD.md, Architecture 6): the
one definition that the losses, evaluation and search use.

[ours; the paper's weights are unknown] With L2-normalised embeddings,
    s(v, t) = w_g cos(g_v, g_t) + w_c mean_j cos(C_v^j, C_t^j) + w_f mean_i cos(f_v^i, f_t^i).
This equals one inner product <[g_v; C_v; f_v], [w_g g_t; (w_c/N_c) C_t; (w_f/P) f_t]>, so a
gallery index stores one vector of D = d (1 + N_c + P) per image and exact maximum-inner-product
search returns exactly the model's ranking.

Orientation: rows are texts, columns are images, everywhere. Every function here takes the texts
first and returns `(Q, G, ...)`: `(Q, G)` queries x gallery in evaluation and search, `(B, B)`
captions x images of a training batch in the losses (entry [t, v] = s(image v, text t); pair i is
text i with image i). A loss that anchors on images reads the transpose `sim.T`. The cosines are
computed image-major and returned as the transposed view, so a loss's `sim.T` is the contiguous
image-major product: training numbers stayed bit for bit those of the per-loss copies this module
replaced (issue 12). Search calls the same functions on its numpy arrays (`torch.from_numpy`).
"""

from __future__ import annotations

import torch

from partsearch.model.model import Embeddings

Weights = tuple[float, float, float]


def global_cosines(text_global: torch.Tensor, image_global: torch.Tensor) -> torch.Tensor:
    """`(Q, d)`, `(G, d)` L2-normalised -> `(Q, G)`: cos(g_v, g_t)."""
    return (image_global @ text_global.T).T


def token_cosines(text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
    """`(Q, N, d)`, `(G, N, d)` -> `(Q, G, N)`: cos of token j of the text with token j of the image
    (coarse token j, or fine part i = stripe i)."""
    return torch.einsum("gnd,qnd->gqn", image_tokens, text_tokens).transpose(0, 1)


def mean_token_cosines(text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
    """`(Q, N, d)`, `(G, N, d)` -> `(Q, G)`: `token_cosines` averaged over the N tokens (one
    contraction over tokens and width together)."""
    return (torch.einsum("gnd,qnd->gq", image_tokens, text_tokens) / image_tokens.shape[1]).T


def part_scores(image_emb: Embeddings, text_emb: Embeddings) -> dict[str, torch.Tensor]:
    """Per-token cosines: {"coarse": `(Q, G, N_c)`, "fine": `(Q, G, P)`} (fine i = stripe i)."""
    return {
        "coarse": token_cosines(text_emb.coarse, image_emb.coarse),
        "fine": token_cosines(text_emb.fine, image_emb.fine),
    }


def level_similarities(image_emb: Embeddings, text_emb: Embeddings) -> dict[str, torch.Tensor]:
    """{"global", "coarse", "fine"}, each `(Q, G)`: the cosine, and the token-wise cosines
    averaged over the N_c coarse / P fine tokens."""
    return {
        "global": global_cosines(text_emb.global_, image_emb.global_),
        "coarse": mean_token_cosines(text_emb.coarse, image_emb.coarse),
        "fine": mean_token_cosines(text_emb.fine, image_emb.fine),
    }


def similarity(image_emb: Embeddings, text_emb: Embeddings, weights: Weights = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """s(v, t) for every text x image pair: `(Q, G)`."""
    levels = level_similarities(image_emb, text_emb)
    w_g, w_c, w_f = weights
    return w_g * levels["global"] + w_c * levels["coarse"] + w_f * levels["fine"]


def fold_gallery(image_emb: Embeddings) -> torch.Tensor:
    """`(G, D)`: [g_v; C_v; f_v] flattened, D = d (1 + N_c + P)."""
    return torch.cat([image_emb.global_, image_emb.coarse.flatten(1), image_emb.fine.flatten(1)], dim=1)


def fold_query(text_emb: Embeddings, weights: Weights = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """`(Q, D)`: [w_g g_t; (w_c/N_c) C_t; (w_f/P) f_t], whose inner product with `fold_gallery`
    is `similarity`: `fold_query(t) @ fold_gallery(v).T` is `(Q, G)` like every similarity here."""
    w_g, w_c, w_f = weights
    n_c, p = text_emb.coarse.shape[1], text_emb.fine.shape[1]
    return torch.cat(
        [w_g * text_emb.global_, (w_c / n_c) * text_emb.coarse.flatten(1), (w_f / p) * text_emb.fine.flatten(1)], dim=1
    )
