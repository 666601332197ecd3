"""Token diversity and attention overlap [ours]: known values and the gradient direction."""

import pytest
import torch

from partsearch.losses.contrastive import infonce_from_similarity, infonce_loss
from partsearch.losses.diversity import attention_overlap_loss, concentration_loss, diversity_loss


def test_copies_give_diversity_loss_one_and_orthogonal_tokens_zero():
    copies = torch.randn(3, 1, 8).expand(3, 4, 8)
    assert diversity_loss(copies).item() == pytest.approx(1.0, abs=1e-6)
    assert diversity_loss(torch.eye(4)[None].repeat(3, 1, 1)).item() == pytest.approx(0.0, abs=1e-6)


def test_a_step_on_the_diversity_loss_pulls_near_copies_apart():
    tokens = (torch.randn(1, 1, 8) + 0.05 * torch.randn(2, 3, 8)).requires_grad_()
    before = diversity_loss(tokens)
    before.backward()
    with torch.no_grad():
        after = diversity_loss(tokens - 0.5 * tokens.grad)
    assert after < before


def test_the_same_attention_map_overlaps_fully_and_disjoint_maps_not_at_all():
    same = torch.softmax(torch.randn(2, 1, 10), -1).expand(2, 3, 10)
    assert attention_overlap_loss(same).item() == pytest.approx(1.0, abs=1e-6)
    disjoint = torch.eye(3)[None].repeat(2, 1, 1)
    assert attention_overlap_loss(disjoint).item() == pytest.approx(0.0, abs=1e-6)


def test_a_map_on_one_cell_has_no_spread_and_a_uniform_map_that_of_the_grid():
    one_cell = torch.zeros(2, 3, 8)
    one_cell[:, :, 5] = 1.0
    assert concentration_loss(one_cell, (4, 2)).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((2, 3, 8), 1 / 8)
    # the variance of 4 row centres and of 2 column centres in [0, 1]
    assert concentration_loss(uniform, (4, 2)).item() == pytest.approx((1 - 1 / 16) / 12 + (1 - 1 / 4) / 12)


def test_one_token_has_nothing_to_differ_from():
    assert diversity_loss(torch.randn(2, 1, 4)).item() == 0.0
    assert attention_overlap_loss(torch.rand(2, 1, 4)).item() == 0.0


def test_infonce_from_a_similarity_equals_the_global_infonce():
    a, b = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1), torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    # a: images, b: texts; the similarity's rows are texts
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.allclose(infonce_loss(a, b, labels, 0.1), infonce_from_similarity(b @ a.t(), labels, 0.1))
