"""Part correspondence within a matched pair [ours]: known values and the gradient direction."""

import math

import pytest
import torch
import torch.nn.functional as F

from partsearch.losses.correspondence import part_correspondence_loss


def test_parts_that_match_by_index_give_a_low_loss_and_shuffled_parts_a_high_one():
    parts = torch.eye(4)[None].repeat(2, 1, 1)  # 2 pairs, 4 orthogonal parts each
    matched = part_correspondence_loss(parts, parts, temperature=0.1)
    shuffled = part_correspondence_loss(parts, parts[:, [1, 2, 3, 0]], temperature=0.1)
    assert matched.item() == pytest.approx(-math.log(math.exp(10) / (math.exp(10) + 3)), rel=1e-3)
    assert shuffled.item() > 10.0


def test_copies_of_one_part_give_log_p():
    copies = F.normalize(torch.randn(3, 1, 8), dim=-1).expand(3, 6, 8)
    assert part_correspondence_loss(copies, copies).item() == pytest.approx(math.log(6), rel=1e-5)


def test_a_step_raises_the_diagonal_margin():
    image = F.normalize(torch.randn(1, 1, 8) + 0.1 * torch.randn(2, 3, 8), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(1, 1, 8) + 0.1 * torch.randn(2, 3, 8), dim=-1)

    def margin(x):
        sim = x @ text.transpose(1, 2)
        eye = torch.eye(3, dtype=torch.bool)
        return sim[:, eye].mean() - sim[:, ~eye].mean()

    part_correspondence_loss(image, text, temperature=0.1).backward()
    with torch.no_grad():
        assert margin(image - 0.05 * image.grad) > margin(image)


def test_one_part_has_nothing_to_be_told_from():
    assert part_correspondence_loss(torch.randn(2, 1, 4), torch.randn(2, 1, 4)).item() == 0.0
