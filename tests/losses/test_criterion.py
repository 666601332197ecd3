from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from partsearch.config import ConfigError, LossConfig
from partsearch.losses.criterion import PartSearchCriterion


def embeddings(b=8, d=16, nc=3, p=4, seed=0, tokens=3):
    """Embeddings of a model in training mode: with each query token's attention map over 10
    memory positions (`tokens` = N_c for images, N_c + P for texts)."""
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        global_=F.normalize(torch.randn(b, d, generator=g), dim=-1),
        coarse=F.normalize(torch.randn(b, nc, d, generator=g), dim=-1),
        fine=F.normalize(torch.randn(b, p, d, generator=g), dim=-1),
        attention=torch.softmax(torch.randn(b, tokens, 10, generator=g), dim=-1),
    )


LABELS = torch.arange(8) // 2


def test_default_terms_are_the_papers_six_and_the_three_that_form_the_parts():
    crit = PartSearchCriterion(LossConfig(), num_classes=4, dim=16, num_coarse=3, num_fine=4)
    losses = crit(embeddings(seed=0), embeddings(seed=1, tokens=7), LABELS)
    assert set(losses) == {"id_global", "id_coarse", "id_fine", "rank_global", "rank_coarse", "cmr",
                           "diversity", "attention_overlap", "part_match"}
    assert set(crit.last_stats) == {"cmr_margin", "cmr_commonality", "coarse_token_cos", "coarse_attention_cos"}
    assert 0.05 <= float(crit.last_stats["cmr_margin"]) <= 0.2


def test_weights_scale_terms_and_zero_weight_terms_are_absent():
    base = PartSearchCriterion(LossConfig(), 4, 16, 3, 4)
    scaled = PartSearchCriterion(replace(LossConfig(), cmr=2.0, id_global=3.0, sdm=0.5), 4, 16, 3, 4)
    scaled.load_state_dict(base.state_dict())
    img, txt = embeddings(seed=0), embeddings(seed=1, tokens=7)
    a, b = base(img, txt, LABELS), scaled(img, txt, LABELS)
    assert "sdm" in b and "sdm" not in a
    assert b["cmr"].item() == pytest.approx(2 * a["cmr"].item())
    assert b["id_global"].item() == pytest.approx(3 * a["id_global"].item())


def test_a_zero_weight_id_term_has_no_classifier_and_no_entry():
    crit = PartSearchCriterion(replace(LossConfig(), id_coarse=0.0), 4, 16, 3, 4)
    assert not hasattr(crit, "classifier_coarse")
    assert "id_coarse" not in crit(embeddings(seed=0), embeddings(seed=1, tokens=7), LABELS)


def test_classifiers_are_shared_one_per_level_and_one_per_fine_part():
    crit = PartSearchCriterion(LossConfig(), num_classes=5, dim=16, num_coarse=3, num_fine=4)
    assert crit.classifier_global.weight.shape == (5, 16)
    assert crit.classifier_coarse.weight.shape == (5, 48)
    assert len(crit.classifier_fine) == 4


@pytest.mark.parametrize("override", [{"commonality": "hard"}, {"cmr": -1.0},
                                      {"part_match_levels": ("fine", "hands")}, {"part_match_levels": ()}])
def test_bad_loss_config_is_rejected_with_the_field_named(override):
    key = next(iter(override))
    with pytest.raises(ConfigError, match=f"loss.{key}"):
        PartSearchCriterion(replace(LossConfig(), **override), 4, 16, 3, 4)


def test_a_few_gradient_steps_lower_the_loss():
    torch.manual_seed(0)
    raw_img = torch.randn(8, 1 + 3 + 4, 16, requires_grad=True)
    raw_txt = torch.randn(8, 1 + 3 + 4, 16, requires_grad=True)
    crit = PartSearchCriterion(replace(LossConfig(), attention_overlap=0.0), 4, 16, 3, 4)  # no attention maps here
    opt = torch.optim.Adam([raw_img, raw_txt, *crit.parameters()], lr=0.05)

    def split(x):
        x = F.normalize(x, dim=-1)
        return SimpleNamespace(global_=x[:, 0], coarse=x[:, 1:4], fine=x[:, 4:])

    values = []
    for _ in range(20):
        loss = sum(crit(split(raw_img), split(raw_txt), LABELS).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.7 * values[0]


def test_attention_overlap_without_attention_maps_is_a_clear_error():
    crit = PartSearchCriterion(LossConfig(), 4, 16, 3, 4)
    img = embeddings(seed=0)
    del img.attention
    with pytest.raises(ValueError, match="training mode"):
        crit(img, embeddings(seed=1, tokens=7), LABELS)


def test_the_ours_terms_are_present_when_weighted():
    from partsearch.losses.diversity import attention_overlap_loss

    img, txt = embeddings(seed=0), embeddings(seed=1, tokens=7)
    crit = PartSearchCriterion(replace(LossConfig(), diversity=1.0, attention_overlap=2.0, infonce_fine=0.5), 4, 16, 3, 4)
    losses = crit(img, txt, LABELS)
    assert {"diversity", "attention_overlap", "infonce_fine"} <= set(losses)
    expected = 2.0 * torch.stack([attention_overlap_loss(img.attention), attention_overlap_loss(txt.attention[:, :3]),
                                  attention_overlap_loss(txt.attention[:, 3:])]).mean()
    assert torch.allclose(losses["attention_overlap"], expected)
    assert "coarse_attention_cos" in crit.last_stats


def test_concentration_weights_the_spread_of_the_image_tokens_maps_over_the_grid():
    from partsearch.losses.diversity import concentration_loss

    img, txt = embeddings(seed=0), embeddings(seed=1, tokens=7)
    img.foreground = torch.ones(8, 5, 2)  # the 10 memory positions as a 5 x 2 grid
    crit = PartSearchCriterion(replace(LossConfig(), concentration=2.0), 4, 16, 3, 4)
    expected = 2.0 * concentration_loss(img.attention, (5, 2))
    assert torch.allclose(crit(img, txt, LABELS)["concentration"], expected)


def test_part_match_averages_the_fine_and_the_coarse_correspondence():
    from partsearch.losses.correspondence import part_correspondence_loss

    img, txt = embeddings(seed=0), embeddings(seed=1, tokens=7)
    crit = PartSearchCriterion(replace(LossConfig(), part_match=3.0), 4, 16, 3, 4)
    expected = 3.0 * 0.5 * (part_correspondence_loss(img.fine, txt.fine) + part_correspondence_loss(img.coarse, txt.coarse))
    assert torch.allclose(crit(img, txt, LABELS)["part_match"], expected)


def test_part_match_on_the_coarse_level_only_ignores_the_fine_parts():
    from partsearch.losses.correspondence import part_correspondence_loss

    img, txt = embeddings(seed=0), embeddings(seed=1, tokens=7)
    crit = PartSearchCriterion(replace(LossConfig(), part_match=2.0, part_match_levels=("coarse",)), 4, 16, 3, 4)
    expected = 2.0 * part_correspondence_loss(img.coarse, txt.coarse)
    assert torch.allclose(crit(img, txt, LABELS)["part_match"], expected)


def test_id_scale_is_the_scale_of_the_cosine_classifier():
    crit = PartSearchCriterion(replace(LossConfig(), id_scale=5.0), 4, 16, 3, 4)
    logits = crit.classifier_global(torch.randn(8, 16))
    assert logits.abs().max() <= 5.0 + 1e-5 and logits.abs().max() > 1.0
