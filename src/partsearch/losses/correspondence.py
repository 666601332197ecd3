"""Part correspondence within a matched pair [ours, not in the paper] (METHOD.md, "Making the
parts form").

The paper pairs image stripe p with text fine token p (and coarse token j with coarse token j) by
index, and every loss it uses compares the SAME index across samples: the fine ID loss per part,
the CMR loss and our part InfoNCE all score cos(image_i part p, text_k part p). None of them asks
that image part p be closer to the pair's text part p than to its text part q != p, so text fine
token 1 gets no signal that tells the head stripe from the feet stripe (measured: a diagonal
margin of 0.01, every cos(stripe p, text token q) within 0.07 of the others).

`part_correspondence_loss` gives that signal: for each matched pair, a cross-entropy over the
pair's P parts, in both directions (image part p against the text's P parts, and text part q
against the image's P parts), target the part of the same index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def part_correspondence_loss(image_parts: torch.Tensor, text_parts: torch.Tensor,
                             temperature: float = 0.02) -> torch.Tensor:
    """image_parts, text_parts `(B, P, d)`, L2-normalised, row i of both one matched pair ->
    mean over pairs, parts and both directions of CE(softmax_q cos(x_p, y_q) / tau, target p)."""
    b, p, _ = image_parts.shape
    if p < 2:
        return image_parts.new_zeros((), dtype=torch.float32)
    logits = (image_parts.float() @ text_parts.float().transpose(1, 2)) / temperature  # (B, P, P)
    target = torch.arange(p, device=logits.device).repeat(b)
    return 0.5 * (F.cross_entropy(logits.flatten(0, 1), target)
                  + F.cross_entropy(logits.transpose(1, 2).flatten(0, 1), target))
