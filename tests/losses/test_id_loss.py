import math

import pytest
import torch
from torch import nn

from partsearch.losses.id import CosineClassifier, id_loss


def test_id_loss_is_mean_of_image_and_text_cross_entropy_with_one_classifier():
    classifier = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    image = torch.tensor([[1.0, 0.0]])
    text = torch.tensor([[0.0, 1.0]])
    labels = torch.tensor([0])
    # image logits (1, 0, -1), text logits (0, 1, -1); label 0.
    z = math.exp(1) + 1 + math.exp(-1)
    expected = 0.5 * (-math.log(math.exp(1) / z) - math.log(1 / z))
    assert id_loss(classifier, image, text, labels).item() == pytest.approx(expected, abs=1e-6)


def test_id_loss_gradient_reaches_the_shared_classifier_from_both_modalities():
    classifier = nn.Linear(2, 3)
    image = torch.randn(4, 2, requires_grad=True)
    text = torch.randn(4, 2, requires_grad=True)
    id_loss(classifier, image, text, torch.tensor([0, 1, 2, 0])).backward()
    assert image.grad.abs().sum() > 0 and text.grad.abs().sum() > 0
    assert classifier.weight.grad.abs().sum() > 0


def test_cosine_classifier_logits_are_scaled_cosines():
    head = CosineClassifier(2, 2, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [1.0, 1.0]]))
    logits = head(torch.tensor([[0.0, 2.0]]))
    assert logits.tolist()[0] == pytest.approx([0.0, 10.0 / 2**0.5])
