import math

import pytest
import torch

from partsearch.losses.contrastive import infonce_loss, sdm_loss


def test_infonce_matches_hand_computation_and_drops_same_identity_non_pairs():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    t = 0.5
    s = (image @ text.t()).tolist()

    def ce(row, target, allowed):
        z = sum(math.exp(row[j] / t) for j in allowed)
        return -math.log(math.exp(row[target] / t) / z)

    allowed = {0: [0, 1, 2], 1: [0, 1], 2: [0, 2]}  # sample 1 and 2 share an identity
    i2t = [ce(s[i], i, allowed[i]) for i in range(3)]
    t2i = [ce([s[j][i] for j in range(3)], i, allowed[i]) for i in range(3)]
    expected = 0.5 * (sum(i2t) / 3 + sum(t2i) / 3)
    assert infonce_loss(image, text, labels, t).item() == pytest.approx(expected, abs=1e-5)


def test_sdm_matches_hand_computation():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    text = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    t = 0.5
    s = (image @ text.t()).tolist()
    q = [[1.0, 0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]]

    def kl(row, target):
        z = sum(math.exp(v / t) for v in row)
        p = [math.exp(v / t) / z for v in row]
        return sum(pi * (math.log(pi) - math.log(qi + 1e-8)) for pi, qi in zip(p, target))

    i2t = sum(kl(s[i], q[i]) for i in range(3)) / 3
    t2i = sum(kl([s[j][i] for j in range(3)], q[i]) for i in range(3)) / 3
    assert sdm_loss(image, text, labels, t).item() == pytest.approx(i2t + t2i, abs=1e-4)
