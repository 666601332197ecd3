"""The frozen text prefix cache (`train/text_cache.py`): the same text embeddings and gradients as
the full forward, each caption's frozen layers run once, and nothing cached in eval mode."""

import torch

from partsearch.config import load_config
from partsearch.train.text_cache import FrozenTextPrefix


def _model(overrides=()):
    from partsearch.model.model import build_model

    cfg = load_config(None, ["model.image_backbone=small_cnn", "model.image_weights=random", "model.text_backbone=bert",
                             "model.text_weights=random", "model.text_width=64", "model.text_layers=3",
                             "model.freeze_text=2", "model.dim=32", *overrides])
    torch.manual_seed(0)
    return cfg, build_model(cfg, vocab_size=50)


def _batch():
    ids = torch.tensor([[2, 5, 7, 9, 3, 0, 0], [2, 8, 3, 0, 0, 0, 0], [2, 5, 7, 9, 11, 12, 3]])
    return ids, (ids != 0)


def _text(model, ids, mask):
    emb = model.encode_text(ids, mask)
    return torch.cat([emb.global_.flatten(1), emb.coarse.flatten(1), emb.fine.flatten(1)], dim=1)


def test_cached_training_forward_and_gradients_match_the_full_forward():
    cfg, model = _model(["model.dropout=0.0"])  # dropout draws differ between two forwards
    model.train()
    ids, mask = _batch()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    full = _text(model, ids, mask)
    full.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    cache = FrozenTextPrefix.attach(model, cfg)
    for _ in range(2):  # the first call fills the cache, the second reads it
        model.zero_grad()
        cached = _text(model, ids, mask)
        cached.square().sum().backward()
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-5, rtol=1e-4)
    assert (cache.misses, cache.hits) == (3, 3)


def test_a_caption_in_another_batch_with_other_padding_is_read_from_the_cache():
    cfg, model = _model()
    model.train()
    cache = FrozenTextPrefix.attach(model, cfg)
    ids, mask = _batch()
    _text(model, ids, mask)
    _text(model, ids[1:2, :4], mask[1:2, :4])
    assert (cache.misses, cache.hits) == (3, 1)


def test_eval_mode_runs_the_whole_backbone_and_caches_nothing():
    cfg, model = _model()
    cache = FrozenTextPrefix.attach(model, cfg)
    model.eval()
    ids, mask = _batch()
    _text(model, ids, mask)
    assert cache.states == {} and len(model.text_backbone.net.encoder.layer) == 3


def test_no_cache_without_a_frozen_prefix_or_when_turned_off():
    assert FrozenTextPrefix.attach(_model(["model.freeze_text=none"])[1], _model(["model.freeze_text=none"])[0]) is None
    cfg, model = _model(["train.cache_frozen_text=false"])
    assert FrozenTextPrefix.attach(model, cfg) is None
