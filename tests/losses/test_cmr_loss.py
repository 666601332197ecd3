import math

import pytest
import torch
import torch.nn.functional as F

from partsearch.losses.cmr import cmr_loss, cmr_margin, commonality
from partsearch.model.similarity import token_cosines


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


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
    sim = token_cosines(text, image).transpose(0, 1).tolist()  # rows = images
    total = 0.0
    for direction in range(2):
        terms = []
        for a in range(4):
            for p in range(2):
                s = (lambda x, y: sim[x][y][p]) if direction == 0 else (lambda x, y: sim[y][x][p])
                negs = [n for n in range(4) if labels[n] != labels[a]]
                c = sum(sigmoid((s(a, n) - s(a, a) + 0.1) / 0.05) for n in negs) / len(negs)
                m = max(0.2 * (1 - c), 0.05)
                terms.append(max(0.0, m - s(a, a) + max(s(a, n) for n in negs)))
        total += sum(terms) / len(terms)
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


def test_per_pair_loss_matches_hand_computation():
    torch.manual_seed(3)
    image = F.normalize(torch.randn(4, 2, 3), dim=-1)
    text = F.normalize(torch.randn(4, 2, 3), dim=-1)
    labels = torch.tensor([0, 0, 1, 2])
    sim = token_cosines(text, image).transpose(0, 1).tolist()  # rows = images
    total = 0.0
    for direction in range(2):
        terms = []
        for a in range(4):
            for p in range(2):
                s = (lambda x, y: sim[x][y][p]) if direction == 0 else (lambda x, y: sim[y][x][p])
                hinges = []
                for n in (n for n in range(4) if labels[n] != labels[a]):
                    m = max(0.2 * (1 - sigmoid((s(a, n) - s(a, a) + 0.1) / 0.05)), 0.05)
                    hinges.append(m - s(a, a) + s(a, n))
                terms.append(max(0.0, max(hinges)))
        total += sum(terms) / len(terms)
    assert cmr_loss(image, text, labels, mode="per_pair").loss.item() == pytest.approx(total, abs=1e-5)


def test_per_pair_margin_belongs_to_the_selected_negative_not_to_the_anchor():
    # text anchor 0 with s(a, a+) = 0.5 and two negatives; soft rank gives the anchor one margin
    # from the mean commonality of both, per pair the margin is that of the hardest one alone.
    from partsearch.losses.cmr import _per_pair_cmr
    s = torch.tensor([[0.5, 0.47, 0.2], [0.0, 0.9, 0.0], [0.0, 0.0, 0.9]]).unsqueeze(-1)  # rows = texts
    out = _per_pair_cmr(s, torch.arange(3), alpha=0.2, min_margin=0.05, delta=0.1, temperature=0.05)
    c_hardest = sigmoid((0.47 - 0.5 + 0.1) / 0.05)
    assert out.commonality[1, 0, 0].item() == pytest.approx(c_hardest, abs=1e-6)
    assert out.margin[1, 0, 0].item() == pytest.approx(max(0.2 * (1 - c_hardest), 0.05), abs=1e-6)
    soft = commonality(s, torch.arange(3))[0, 0].item()
    assert soft == pytest.approx((c_hardest + sigmoid((0.2 - 0.5 + 0.1) / 0.05)) / 2, abs=1e-6)


def test_per_pair_commonality_carries_no_gradient_but_the_loss_does():
    image = F.normalize(torch.randn(4, 2, 3), dim=-1).requires_grad_()
    out = cmr_loss(image, F.normalize(torch.randn(4, 2, 3), dim=-1), torch.arange(4), mode="per_pair")
    assert out.loss.requires_grad and not out.margin.requires_grad and not out.commonality.requires_grad


def test_weighted_loss_matches_hand_computation():
    torch.manual_seed(4)
    image = F.normalize(torch.randn(4, 2, 3), dim=-1)
    text = F.normalize(torch.randn(4, 2, 3), dim=-1)
    labels = torch.tensor([0, 0, 1, 2])
    sim = token_cosines(text, image).transpose(0, 1).tolist()  # rows = images
    rows = []  # (1 - c, hinge) per direction, anchor, part
    for direction in range(2):
        for a in range(4):
            for p in range(2):
                s = (lambda x, y: sim[x][y][p]) if direction == 0 else (lambda x, y: sim[y][x][p])
                negs = [n for n in range(4) if labels[n] != labels[a]]
                c = sum(sigmoid((s(a, n) - s(a, a) + 0.1) / 0.05) for n in negs) / len(negs)
                rows.append((direction, 1 - c, max(0.0, max(0.2 * (1 - c), 0.05) - s(a, a) + max(s(a, n) for n in negs))))
    mean_rare = sum(r for _, r, _ in rows) / len(rows)
    total = sum(sum(r / mean_rare * h for d, r, h in rows if d == direction) / 8 for direction in range(2))
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
