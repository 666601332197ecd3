"""Fine (part-level) image embeddings (METHOD.md, Architecture 5).

[paper] The decoder's cross-attention of the coarse tokens, averaged, is a foreground map A;
M_v is weighted by A (Hadamard, broadcast over channels), cut into P horizontal stripes, and each
stripe is max-pooled into f_v^i. Stripe i corresponds to the text's fine token i by index.
[ours] A is also averaged over decoder layers and rescaled to a maximum of 1 per image; when P
does not divide h the stripes follow adaptive max pooling to (P, 1), which may overlap by a row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def foreground_map(attention: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """attention `(B, N_c, h*w)` (per token) or `(B, h*w)` (already averaged over tokens) -> A
    `(B, h, w)` in fp32: the mean over tokens, rescaled so its maximum is 1 per image."""
    if attention.dim() == 3:
        attention = attention.float().mean(dim=1)
    a = attention.float().unflatten(1, grid)
    return a / a.amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)


def stripe_bounds(height: int, parts: int) -> list[tuple[int, int]]:
    """Row ranges `[start, end)` of the P stripes over a map of `height` rows, exactly those of
    `adaptive_max_pool2d` to (P, 1): start = floor(i h / P), end = ceil((i + 1) h / P)."""
    return [((i * height) // parts, -((-(i + 1) * height) // parts)) for i in range(parts)]


def stripe_regions(parts: int) -> list[str]:
    """Body-region names of P horizontal stripes of a pedestrian crop, from each stripe's centre
    (in a standing pedestrian crop the head takes about the top sixth, the feet the bottom
    eighth); names that repeat are numbered top to bottom ("legs 1", "legs 2")."""
    bounds = ((0.15, "head"), (0.30, "shoulders"), (0.50, "torso"), (0.66, "hips"), (0.86, "legs"), (1.01, "feet"))
    names = [next(name for top, name in bounds if (i + 0.5) / parts < top) for i in range(parts)]
    out = []
    for i, name in enumerate(names):
        same = [j for j, n in enumerate(names) if n == name]
        out.append(name if len(same) == 1 else f"{name} {same.index(i) + 1}")
    return out


def stripe_pool(memory: torch.Tensor, foreground: torch.Tensor | None, parts: int,
                grid: tuple[int, int] | None = None) -> torch.Tensor:
    """memory M_v `(B, h*w, d)`, foreground A `(B, h, w)` -> fine embeddings `(B, P, d)`: the
    max of M_v * A over each horizontal stripe (a max over each row first, then over the rows
    of each stripe: the same max, in the tokens' own layout, which is cheaper on a GPU).
    `foreground=None` pools M_v unweighted [ours, `model.fine_foreground=false`]; then `grid`
    `(h, w)` gives the layout."""
    tokens = memory.unflatten(1, foreground.shape[1:] if foreground is not None else grid)
    if foreground is not None:
        tokens = tokens * foreground[..., None]
    rows = tokens.amax(dim=2)
    return F.adaptive_max_pool1d(rows.transpose(1, 2), parts).transpose(1, 2)
