"""The similarity and its folding into one inner product."""

import pytest
import torch
import torch.nn.functional as F

from partsearch.config import LossConfig
from partsearch.losses.criterion import PartSearchCriterion
from partsearch.losses.ranking import ranking_loss
from partsearch.model.model import Embeddings
from partsearch.model.similarity import (
    fold_gallery, fold_query, global_cosines, level_similarities, mean_token_cosines, part_scores, similarity,
    token_cosines,
)


def _random_embeddings(b, d=8, n_c=3, p=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    unit = lambda *shape: F.normalize(torch.randn(*shape, d, generator=g), dim=-1)  # noqa: E731
    return Embeddings(unit(b), unit(b, n_c), unit(b, p))


def test_similarity_is_the_weighted_sum_of_mean_cosines():
    images, texts = _random_embeddings(5, seed=0), _random_embeddings(3, seed=1)
    sim = similarity(images, texts, (0.5, 2.0, 3.0))
    assert sim.shape == (3, 5)
    q, g = 2, 4
    expected = (
        0.5 * torch.dot(texts.global_[q], images.global_[g])
        + 2.0 * sum(torch.dot(texts.coarse[q, j], images.coarse[g, j]) for j in range(3)) / 3
        + 3.0 * sum(torch.dot(texts.fine[q, i], images.fine[g, i]) for i in range(4)) / 4
    )
    assert torch.allclose(sim[q, g], expected, atol=1e-6)


def test_folded_inner_products_equal_the_similarity():
    images, texts = _random_embeddings(6, seed=2), _random_embeddings(4, seed=3)
    weights = (1.0, 0.7, 1.5)
    gallery, queries = fold_gallery(images), fold_query(texts, weights)
    assert gallery.shape == (6, 8 * (1 + 3 + 4)) and queries.shape == (4, 8 * (1 + 3 + 4))
    assert torch.allclose(queries @ gallery.T, similarity(images, texts, weights), atol=1e-5)


def test_part_scores_average_to_the_level_similarities():
    images, texts = _random_embeddings(5, seed=4), _random_embeddings(2, seed=5)
    parts, levels = part_scores(images, texts), level_similarities(images, texts)
    assert parts["coarse"].shape == (2, 5, 3) and parts["fine"].shape == (2, 5, 4)
    assert torch.allclose(parts["coarse"].mean(-1), levels["coarse"], atol=1e-6)
    assert torch.allclose(parts["fine"].mean(-1), levels["fine"], atol=1e-6)
    assert torch.allclose(parts["fine"][1, 3, 2], torch.dot(texts.fine[1, 2], images.fine[3, 2]))


def test_every_similarity_has_texts_as_rows_and_images_as_columns():
    images, texts = _random_embeddings(5, seed=6), _random_embeddings(2, seed=7)
    assert global_cosines(texts.global_, images.global_).shape == (2, 5)
    assert token_cosines(texts.fine, images.fine).shape == (2, 5, 4)
    assert mean_token_cosines(texts.coarse, images.coarse).shape == (2, 5)
    assert global_cosines(texts.global_, images.global_)[1, 3] == pytest.approx(float(texts.global_[1] @ images.global_[3]))


def test_mean_token_cosines_is_the_mean_of_token_wise_cosines():
    torch.manual_seed(0)
    image = F.normalize(torch.randn(3, 4, 5), dim=-1)
    text = F.normalize(torch.randn(2, 4, 5), dim=-1)
    sim = mean_token_cosines(text, image)
    for k in range(2):
        for i in range(3):
            expected = sum(float(text[k, j] @ image[i, j]) for j in range(4)) / 4
            assert sim[k, i].item() == pytest.approx(expected, abs=1e-6)


def test_the_training_ranking_terms_score_the_similarity_that_evaluation_uses():
    images, texts = _random_embeddings(6, seed=8), _random_embeddings(6, seed=9)
    labels = torch.tensor([0, 0, 1, 2, 3, 3])
    only_ranking = LossConfig(id_global=0, id_coarse=0, id_fine=0, cmr=0, diversity=0, attention_overlap=0)
    losses = PartSearchCriterion(only_ranking, 4, 8, 3, 4)(images, texts, labels)
    levels = level_similarities(images, texts)
    assert torch.equal(losses["rank_global"], ranking_loss(levels["global"], labels, only_ranking.margin))
    assert torch.equal(losses["rank_coarse"], ranking_loss(levels["coarse"], labels, only_ranking.margin))
