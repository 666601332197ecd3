"""Tokenizers: the MiniLM WordPiece and open_clip's BPE, padded and truncated with a flag."""

import pytest
import torch
from transformers import AutoTokenizer

from partsearch.config import ConfigError, ModelConfig
from partsearch.model.backbones import build_tokenizer
from partsearch.errors import UserError
from partsearch.hub import minilm_dir

TEXT = "A woman in a red coat, black trousers and white sneakers carrying a yellow umbrella."


def test_minilm_ids_match_transformers():
    tok = build_tokenizer(ModelConfig(text_weights="minilm"), max_length=32)
    reference = AutoTokenizer.from_pretrained(str(minilm_dir()))(TEXT, padding="max_length", max_length=32,
                                                                 truncation=True, return_tensors="pt")
    batch = tok([TEXT])
    assert torch.equal(batch.ids, reference["input_ids"])
    assert torch.equal(batch.mask, reference["attention_mask"])
    assert tok.vocab_size == 30522


def test_random_text_weights_use_the_minilm_vocabulary():
    tok = build_tokenizer(ModelConfig(text_weights="random"), max_length=8)
    assert tok(["hello"]).ids[0, :3].tolist() == [101, 7592, 102]


def test_bert_truncation_keeps_sep_and_sets_the_flag():
    tok = build_tokenizer(ModelConfig(text_weights="minilm"), max_length=6)
    batch = tok([TEXT, "a man"])
    assert batch.ids.shape == (2, 6)
    assert batch.truncated.tolist() == [True, False]
    assert batch.ids[0, -1].item() == 102
    assert batch.mask[1].tolist() == [1, 1, 1, 1, 0, 0]


def test_clip_tokens_end_at_eot_and_mask_covers_them():
    tok = build_tokenizer(ModelConfig(text_backbone="clip_text"), max_length=77)
    batch = tok(["a man in red"])
    eot = batch.ids[0].tolist().index(49407)
    assert batch.ids[0, 0].item() == 49406
    assert batch.mask[0].tolist() == [1] * (eot + 1) + [0] * (77 - eot - 1)
    assert not batch.truncated[0]


def test_clip_truncation_matches_open_clip():
    import open_clip

    tok = build_tokenizer(ModelConfig(text_backbone="clip_text"), max_length=8)
    batch = tok([TEXT])
    assert torch.equal(batch.ids, open_clip.get_tokenizer("ViT-B-16")([TEXT], context_length=8))
    assert batch.truncated.tolist() == [True]


def test_unknown_backbone_is_a_config_error_listing_valid_names():
    with pytest.raises(ConfigError, match="unknown model.text_backbone 'gpt'; valid: bert, clip_text"):
        build_tokenizer(ModelConfig(text_backbone="gpt"), max_length=8)


def test_uncached_hub_name_offline_asks_for_a_local_path():
    with pytest.raises(UserError, match="could not load the tokenizer 'no-such-org/no-such-bert'.*local directory"):
        build_tokenizer(ModelConfig(text_weights="no-such-org/no-such-bert"), max_length=8)
