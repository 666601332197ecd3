"""Image-text similarity and its folding into one inner product (METHOD.md, Architecture 6).

[ours; the paper's weights are unknown] With L2-normalised embeddings,
    s(v, t) = w_g cos(g_v, g_t) + w_c mean_j cos(C_v^j, C_t^j) + w_f mean_i cos(f_v^i, f_t^i).
This equals one inner product <[g_v; C_v; f_v], [w_g g_t; (w_c/N_c) C_t; (w_f/P) f_t]>, so a
gallery index stores one vector of D = d (1 + N_c + P) per image and exact maximum-inner-product
search returns exactly the model's ranking. Rows of every `(Q, G)` result are texts.
"""

from __future__ import annotations

import torch

from partsearch.model.model import Embeddings

Weights = tuple[float, float, float]


def part_scores(image_emb: Embeddings, text_emb: Embeddings) -> dict[str, torch.Tensor]:
    """Per-token cosines: {"coarse": `(Q, G, N_c)`, "fine": `(Q, G, P)`} (fine i = stripe i)."""
    return {
        "coarse": torch.einsum("qjd,gjd->qgj", text_emb.coarse, image_emb.coarse),
        "fine": torch.einsum("qid,gid->qgi", text_emb.fine, image_emb.fine),
    }


def level_similarities(image_emb: Embeddings, text_emb: Embeddings) -> dict[str, torch.Tensor]:
    """{"global", "coarse", "fine"}, each `(Q, G)`: the cosine, and the token-wise cosines
    averaged over the N_c coarse / P fine tokens."""
    coarse = torch.einsum("qjd,gjd->qg", text_emb.coarse, image_emb.coarse) / text_emb.coarse.shape[1]
    fine = torch.einsum("qid,gid->qg", text_emb.fine, image_emb.fine) / text_emb.fine.shape[1]
    return {"global": text_emb.global_ @ image_emb.global_.T, "coarse": coarse, "fine": fine}


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
    is `similarity`."""
    w_g, w_c, w_f = weights
    n_c, p = text_emb.coarse.shape[1], text_emb.fine.shape[1]
    return torch.cat(
        [w_g * text_emb.global_, (w_c / n_c) * text_emb.coarse.flatten(1), (w_f / p) * text_emb.fine.flatten(1)], dim=1
    )
