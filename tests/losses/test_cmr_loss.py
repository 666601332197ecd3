import math

import pytest
import torch
import torch.nn.functional as F

from partsearch.losses.cmr import cmr_loss, cmr_margin, commonality
from partsearch.model.similarity import token_cosines


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def by_hand(image, text, labels, term):
    """[(direction, term(s, a, negatives))] over directions, anchors and parts, where s(x, y) is
    the part cosine of anchor x with candidate y in that direction (rows = the anchor's modality)."""
    sim = token_cosines(text, image).transpose(0, 1).tolist()  # rows = images
    n, parts = len(labels), len(sim[0][0])
    rows = []
    for direction in range(2):
        for a in range(n):
            for p in range(parts):
                s = (lambda x, y, p=p: sim[x][y][p]) if direction == 0 else (lambda x, y, p=p: sim[y][x][p])
                negs = [m for m in range(n) if labels[m] != labels[a]]
                rows.append((direction, term(s, a, negs)))
    return rows


def mean_per_direction(rows):
    return sum(sum(v for d, v in rows if d == direction) / sum(1 for d, _ in rows if d == direction)
               for direction in range(2))


def test_commonality_matches_hand_computation():
    # one part, 3 samples of 3 identities; rows = anchors.
    sim = torch.tensor([[0.8, 0.8, 0.6], [0.1, 0.5, 0.4], [0.0, 0.9, 0.2]]).unsqueeze(-1)
    labels = torch.tensor([0, 1, 2])
    c = commonality(sim, labels, delta=0.1, temperature=0.05)
    expected = [
        (sigmoid((0.8 - 0.8 + 0.1) / 0.05) + sigmoid((0.6 - 0.8 + 0.1) / 0.05)) / 2,
        (sigmoid((0.1 - 0.5 + 0.1) / 0.05) + sigmoid((0.4 - 0.5 + 0.1) / 0.05)) / 2,
        (sigmoid((0.0 - 0.2 + 0.1) / 0.05) + sigmoid((0.9 - 0.2 + 0.1) / 0.05)) / 2,
    ]
    assert c[:, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_commonality_ignores_same_identity_samples():
    sim = torch.tensor([[0.5, 0.9, 0.1], [0.9, 0.5, 0.1], [0.1, 0.1, 0.5]]).unsqueeze(-1)
    c = commonality(sim, torch.tensor([0, 0, 1]))
    assert c[0, 0].item() == pytest.approx(sigmoid((0.1 - 0.5 + 0.1) / 0.05), abs=1e-6)


def test_margin_shrinks_as_commonality_grows_and_is_floored():
    c = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    m = cmr_margin(c, alpha=0.2, min_margin=0.05)
    assert m.tolist() == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.05])
    assert all(a >= b for a, b in zip(m.tolist(), m.tolist()[1:]))


def test_a_part_everyone_shares_gets_a_smaller_margin_than_a_rare_part():
    torch.manual_seed(0)
    n, d = 6, 8
    shared = F.normalize(torch.randn(1, d), dim=-1).expand(n, d)  # part 0: the same for all
    rare = F.normalize(torch.randn(n, d), dim=-1)  # part 1: distinct per person
    image = torch.stack([shared, rare], dim=1)
    out = cmr_loss(image, image.clone(), torch.arange(n))
    assert out.margin[:, :, 0].mean() < out.margin[:, :, 1].mean()
    assert out.margin[:, :, 0].max().item() == pytest.approx(0.05)


def test_loss_matches_hand_computation_with_soft_rank_margins():
    torch.manual_seed(1)
    image = F.normalize(torch.randn(4, 2, 3), dim=-1)
    text = F.normalize(torch.randn(4, 2, 3), dim=-1)
    labels = torch.tensor([0, 0, 1, 2])

    def term(s, a, negs):
        c = sum(sigmoid((s(a, n) - s(a, a) + 0.1) / 0.05) for n in negs) / len(negs)
        return max(0.0, max(0.2 * (1 - c), 0.05) - s(a, a) + max(s(a, n) for n in negs))

    total = mean_per_direction(by_hand(image, text, labels.tolist(), term))
    assert cmr_loss(image, text, labels).loss.item() == pytest.approx(total, abs=1e-5)


def test_commonality_none_uses_the_fixed_margin():
    torch.manual_seed(2)
    image = F.normalize(torch.randn(5, 3, 4), dim=-1)
    text = F.normalize(torch.randn(5, 3, 4), dim=-1)
    out = cmr_loss(image, text, torch.arange(5), alpha=0.2, mode="none")
    assert torch.all(out.margin == 0.2)
    sim = token_cosines(text, image).transpose(0, 1)  # rows = images
    loss = 0.0
    for s in (sim, sim.transpose(0, 1)):
        pos = torch.diagonal(s).t()  # (B, P)
        neg = s.masked_fill(torch.eye(5, dtype=torch.bool)[:, :, None], -9).amax(1)
        loss += (0.2 - pos + neg).clamp(min=0).mean()
    assert out.loss.item() == pytest.approx(loss.item(), abs=1e-6)


def test_commonality_carries_no_gradient():
    image = F.normalize(torch.randn(4, 2, 3), dim=-1).requires_grad_()
    sim = token_cosines(image.detach(), image)
    assert not commonality(sim, torch.arange(4)).requires_grad


def test_weighted_loss_matches_hand_computation():
    torch.manual_seed(4)
    image = F.normalize(torch.randn(4, 2, 3), dim=-1)
    text = F.normalize(torch.randn(4, 2, 3), dim=-1)
    labels = torch.tensor([0, 0, 1, 2])

    def term(s, a, negs):  # (1 - c, the soft-rank hinge)
        c = sum(sigmoid((s(a, n) - s(a, a) + 0.1) / 0.05) for n in negs) / len(negs)
        return 1 - c, max(0.0, max(0.2 * (1 - c), 0.05) - s(a, a) + max(s(a, n) for n in negs))

    rows = by_hand(image, text, labels.tolist(), term)
    mean_rare = sum(r for _, (r, _) in rows) / len(rows)
    total = mean_per_direction([(d, r / mean_rare * h) for d, (r, h) in rows])
    assert cmr_loss(image, text, labels, mode="weighted").loss.item() == pytest.approx(total, abs=1e-5)


def test_weighted_mode_pushes_a_common_part_less_than_soft_rank_does():
    torch.manual_seed(0)
    n, d = 6, 8
    common = F.normalize(torch.randn(1, d) + 0.3 * torch.randn(n, d), dim=-1)  # part 0: near one vector for all
    rare = F.normalize(torch.randn(n, d), dim=-1)  # part 1: distinct per person
    image = torch.stack([common, rare], dim=1).requires_grad_()
    text = F.normalize(image.detach() + 0.5 * torch.randn(n, 2, d), dim=-1)
    push = {}
    for mode in ("soft_rank", "weighted"):
        image.grad = None
        out = cmr_loss(image, text, torch.arange(n), mode=mode)
        out.loss.backward()
        push[mode] = image.grad[:, 0].norm(dim=-1).sum().item()
    assert out.commonality[..., 0].mean() > out.commonality[..., 1].mean() + 0.3
    assert 0 < push["weighted"] < 0.8 * push["soft_rank"]
