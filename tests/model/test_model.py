"""PartSearchModel: embeddings, shared parameters, padding, saving, freezing."""

import dataclasses

import pytest
import torch

from partsearch.config import Config, ConfigError
from partsearch.model.model import Embeddings, PartSearchModel, build_model

from conftest import BERT_VOCAB, tiny_config

SIZE = (64, 32)


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return PartSearchModel(cfg, SIZE, BERT_VOCAB)


def _batch(b=2, length=7):
    torch.manual_seed(1)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[1, 4:] = 0
    return torch.randn(b, 3, *SIZE), torch.randint(1000, 2000, (b, length)), mask


def _assert_same(a: Embeddings, b: Embeddings, atol=1e-5):
    for field in ("global_", "coarse", "fine"):
        assert torch.allclose(getattr(a, field), getattr(b, field), atol=atol), field
    assert (a.foreground is None) == (b.foreground is None)
    if a.foreground is not None:
        assert torch.allclose(a.foreground, b.foreground, atol=atol)


def test_embeddings_have_the_configured_shapes_and_unit_norm(tiny_cfg):
    image_emb, text_emb = _model(tiny_cfg).eval()(*_batch())
    assert image_emb.global_.shape == text_emb.global_.shape == (2, 32)
    assert image_emb.coarse.shape == text_emb.coarse.shape == (2, 3, 32)
    assert image_emb.fine.shape == text_emb.fine.shape == (2, 4, 32)
    assert image_emb.foreground.shape == (2, 8, 4) and text_emb.foreground is None
    for emb in (image_emb, text_emb):
        for vectors in (emb.global_, emb.coarse, emb.fine):
            assert torch.allclose(vectors.norm(dim=-1), torch.ones(vectors.shape[:-1]), atol=1e-5)
    assert torch.allclose(image_emb.foreground.amax(dim=(1, 2)), torch.ones(2))


def test_padding_does_not_change_text_embeddings(tiny_cfg):
    model = _model(tiny_cfg).eval()
    ids = torch.randint(1000, 2000, (1, 5))
    short = model.encode_text(ids, torch.ones(1, 5, dtype=torch.long))
    padded_ids = torch.cat([ids, torch.zeros(1, 9, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([torch.ones(1, 5), torch.zeros(1, 9)], dim=1).long()
    _assert_same(short, model.encode_text(padded_ids, padded_mask))


def test_decoder_and_coarse_tokens_are_one_set_of_parameters_for_both_modalities(tiny_cfg):
    model = _model(tiny_cfg)
    queries = model.shared_decoder.coarse_queries
    assert sum(p is queries for p in model.parameters()) == 1
    image_emb, _ = model(*_batch())
    # a fixed random weighting: a plain sum of LayerNormed, L2-normalised vectors is constant
    weights = torch.randn(image_emb.coarse.shape, generator=torch.Generator().manual_seed(0))
    (image_emb.coarse * weights).sum().backward()
    image_grad = queries.grad.clone()
    decoder_weight = model.shared_decoder.layers[0].cross_attn.q.weight
    assert image_grad.abs().sum() > 0 and decoder_weight.grad.abs().sum() > 0
    model.zero_grad()
    images, ids, mask = _batch()
    (model.encode_text(ids, mask).coarse * weights).sum().backward()
    assert queries.grad.abs().sum() > 0 and not torch.allclose(queries.grad, image_grad)
    assert decoder_weight.grad.abs().sum() > 0


def test_fine_text_tokens_read_the_text_through_the_shared_decoder(tiny_cfg):
    model = _model(tiny_cfg)
    _, ids, mask = _batch()
    model.encode_text(ids, mask).fine.sum().backward()
    assert model.fine_text_queries.grad.abs().sum() > 0
    assert model.shared_decoder.layers[-1].ffn[0].weight.grad.abs().sum() > 0
    assert not model.shared_decoder.coarse_queries.grad.any()


def test_saved_state_dict_reloads_to_identical_outputs(tiny_cfg, tmp_path):
    model = _model(tiny_cfg, seed=0).eval()
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    other = _model(tiny_cfg, seed=5).eval()
    other.load_state_dict(torch.load(path, weights_only=True))
    batch = _batch()
    for a, b in zip(model(*batch), other(*batch)):
        _assert_same(a, b, atol=0)


def test_build_model_uses_the_data_image_size():
    cfg = Config()
    cfg.model = tiny_config()
    cfg.data.image_size = (128, 64)
    assert build_model(cfg, BERT_VOCAB).grid == (16, 8)


def test_stripe_rows_cover_the_grid(tiny_cfg):
    rows = _model(tiny_cfg).stripe_rows()
    assert rows == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_param_groups_split_backbones_from_heads(tiny_cfg):
    model = _model(tiny_cfg)
    groups = model.param_groups()
    backbone = {id(p) for m in (model.image_backbone, model.text_backbone) for p in m.parameters()}
    assert groups["backbone"] and all(id(p) in backbone for p in groups["backbone"])
    assert groups["heads"] and not any(id(p) in backbone for p in groups["heads"])
    assert len(groups["backbone"]) + len(groups["heads"]) == len(list(model.parameters()))


def test_freezing_all_and_first_stages_sets_requires_grad():
    model = _model(tiny_config(freeze_image="all", freeze_text="1"))
    assert not any(p.requires_grad for p in model.image_backbone.parameters())
    bert = model.text_backbone.net
    assert not any(p.requires_grad for p in bert.embeddings.parameters())
    assert not any(p.requires_grad for p in bert.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in model.shared_decoder.parameters())
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert not any(id(p) in frozen for group in model.param_groups().values() for p in group)


def test_freezing_first_stages_of_a_cnn_keeps_the_later_ones_trainable():
    backbone = _model(tiny_config(freeze_image="2")).image_backbone
    assert not any(p.requires_grad for m in (backbone.conv1, backbone.layer1, backbone.layer2) for p in m.parameters())
    assert all(p.requires_grad for m in (backbone.layer3, backbone.layer4) for p in m.parameters())


def test_frozen_batchnorm_keeps_its_statistics_in_training(tiny_cfg):
    model = _model(dataclasses.replace(tiny_cfg, freeze_image="1")).train()
    stem_bn, late_bn = model.image_backbone.bn1, model.image_backbone.layer4[0].bn1
    before = stem_bn.running_mean.clone(), late_bn.running_mean.clone()
    model(*_batch())
    assert not stem_bn.training and torch.equal(stem_bn.running_mean, before[0])
    assert late_bn.training and not torch.equal(late_bn.running_mean, before[1])


def test_bad_freeze_value_is_a_config_error():
    with pytest.raises(ConfigError, match="model.freeze_image='9'"):
        _model(tiny_config(freeze_image="9"))


def test_gradient_checkpointing_gives_the_same_gradients(tiny_cfg):
    grads = []
    for checkpointing in (False, True):
        model = _model(dataclasses.replace(tiny_cfg, grad_checkpointing=checkpointing)).train()
        image_emb, text_emb = model(*_batch())
        (image_emb.global_ * text_emb.global_).sum().backward()
        grads.append(model.image_backbone.conv1.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bf16_autocast_gives_float_embeddings(tiny_cfg):
    model = _model(tiny_cfg).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image_emb, text_emb = model(*_batch())
    assert image_emb.fine.dtype == text_emb.coarse.dtype == torch.float32
    assert torch.isfinite(image_emb.foreground).all() and torch.isfinite(image_emb.fine).all()
    assert torch.allclose(image_emb.foreground.amax(dim=(1, 2)), torch.ones(2))


def test_embeddings_concatenate_along_the_batch(tiny_cfg):
    image_emb, _ = _model(tiny_cfg).eval()(*_batch())
    both = Embeddings.cat([image_emb, image_emb])
    assert both.coarse.shape == (4, 3, 32) and both.foreground.shape == (4, 8, 4)
    assert torch.equal(both.fine[2:], image_emb.fine)


def test_coarse_tokens_are_not_copies_at_initialisation(tiny_cfg):
    # With the query tokens drawn at std 0.02 the decoder's self-attention averaged them into one
    # token before any training (measured: pairwise cosine 0.99 on a random batch).
    from partsearch.eval.parts import mean_pairwise_cosine

    torch.manual_seed(0)
    image_emb, text_emb = _model(dataclasses.replace(tiny_cfg, num_coarse=6)).eval()(*_batch())
    assert mean_pairwise_cosine(image_emb.coarse) < 0.9
    assert mean_pairwise_cosine(text_emb.coarse) < 0.9
    assert mean_pairwise_cosine(text_emb.fine) < 0.9


def test_the_stripes_pool_the_projected_tokens_or_the_memory_as_configured(tiny_cfg):
    torch.manual_seed(0)
    a = _model(dataclasses.replace(tiny_cfg, fine_source="projected")).eval()
    torch.manual_seed(0)
    b = _model(dataclasses.replace(tiny_cfg, fine_source="memory")).eval()
    images = _batch()[0]
    ea, eb = a.encode_image(images), b.encode_image(images)
    assert torch.allclose(ea.global_, eb.global_) and torch.allclose(ea.coarse, eb.coarse)
    assert not torch.allclose(ea.fine, eb.fine)


def test_without_the_foreground_weighting_the_stripes_are_plain_maxima_over_their_rows(tiny_cfg):
    from partsearch.model.fine import stripe_pool

    model = _model(dataclasses.replace(tiny_cfg, fine_foreground=False)).eval()
    images = _batch()[0]
    with torch.no_grad():
        out = model.image_backbone(images)
        projected, _ = model.image_encoder(out.tokens)
        plain = stripe_pool(projected, torch.ones(len(images), *model.grid), model.num_fine)
        emb = model.image_heads(out)
    assert torch.allclose(emb.fine, torch.nn.functional.normalize(plain, dim=-1), atol=1e-6)
    assert emb.foreground is not None and emb.foreground.amax() == 1.0


def test_an_image_of_another_size_is_a_clear_user_error(tiny_cfg):
    from partsearch.errors import DataError

    model = _model(tiny_cfg).eval()
    with pytest.raises(DataError, match="data.image_size"):
        model.encode_image(torch.randn(1, 3, 32, 32))


def test_query_init_std_and_encoder_layers_build_what_they_say():
    model = _model(tiny_config(query_init_std=0.5, encoder_layers=3))
    queries = torch.cat([model.shared_decoder.coarse_queries, model.fine_text_queries]).detach()
    assert 0.35 < queries.std().item() < 0.5  # a normal at 0.5 cut at 2 std
    assert len(model.image_encoder.layers) == len(model.text_encoder.layers) == 3


def _attention_and_other_dropouts(model: PartSearchModel) -> tuple[set[float], set[float]]:
    from partsearch.model.encoders import Attention, Dropout

    heads = [model.image_encoder, model.text_encoder, model.shared_decoder]
    attention = {m.dropout for h in heads for m in h.modules() if isinstance(m, Attention)}
    other = {m.p for h in heads for m in h.modules() if isinstance(m, Dropout)}
    return attention, other


def test_attention_dropout_sets_the_attention_weights_dropout_of_encoders_and_decoder_alone():
    model = PartSearchModel(tiny_config(dropout=0.1, attention_dropout=0.0), vocab_size=BERT_VOCAB, image_size=(64, 32))
    assert _attention_and_other_dropouts(model) == ({0.0}, {0.1})


def test_attention_dropout_left_unset_is_the_model_dropout():
    model = PartSearchModel(tiny_config(dropout=0.1), vocab_size=BERT_VOCAB, image_size=(64, 32))
    assert _attention_and_other_dropouts(model) == ({0.1}, {0.1})
