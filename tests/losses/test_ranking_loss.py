import pytest
import torch

from partsearch.losses.ranking import ranking_loss

# Written with rows = images, columns = texts, as the hand computations read it; pair i = (image i,
# text i); samples 0 and 1 share identity 0. ranking_loss takes the transpose (rows = texts).
SIM = torch.tensor([
    [0.9, 0.95, 0.3, 0.1],
    [0.8, 0.5, 0.6, 0.2],
    [0.1, 0.4, 0.7, 0.65],
    [0.0, 0.2, 0.5, 0.3],
])
LABELS = torch.tensor([0, 0, 1, 2])


def test_hardest_negative_loss_matches_hand_computation():
    m = 0.2
    # image->text anchors: negatives are the other-identity columns of each row.
    i2t = [
        max(0, m - 0.9 + max(0.3, 0.1)),    # 0: text 1 (same id, 0.95) is NOT a negative
        max(0, m - 0.5 + max(0.6, 0.2)),    # 1
        max(0, m - 0.7 + max(0.1, 0.4, 0.65)),
        max(0, m - 0.3 + max(0.0, 0.2, 0.5)),
    ]
    # text->image anchors: negatives are the other-identity rows of each column.
    t2i = [
        max(0, m - 0.9 + max(0.1, 0.0)),
        max(0, m - 0.5 + max(0.4, 0.2)),
        max(0, m - 0.7 + max(0.3, 0.6, 0.5)),
        max(0, m - 0.3 + max(0.1, 0.2, 0.65)),
    ]
    expected = sum(i2t) / 4 + sum(t2i) / 4
    assert ranking_loss(SIM.T, LABELS, margin=m).item() == pytest.approx(expected, abs=1e-6)


def test_same_identity_samples_are_never_negatives():
    base = ranking_loss(SIM.T, LABELS).item()
    raised = SIM.clone()
    raised[0, 1] = raised[1, 0] = 5.0  # a same-identity pair made extremely similar
    assert ranking_loss(raised.T, LABELS).item() == pytest.approx(base)
    all_same = ranking_loss(SIM.T, torch.zeros(4, dtype=torch.long))
    assert all_same.item() == 0.0


def test_each_anchor_takes_its_hardest_negative():
    sim = torch.tensor([  # rows = images
        [0.5, 0.6, 0.4],
        [0.0, 0.5, 0.0],
        [0.0, 0.0, 0.5],
    ])
    labels = torch.tensor([0, 1, 2])
    m = 0.2
    # image 0: negatives 0.6 and 0.4 -> 0.6; texts 1 and 2: their columns' largest negatives.
    t2i = [max(0, m - 0.5 + 0.0), m - 0.5 + 0.6, m - 0.5 + 0.4]
    hardest = (m - 0.5 + 0.6) / 3 + sum(t2i) / 3
    assert ranking_loss(sim.T, labels, m).item() == pytest.approx(hardest, abs=1e-6)
