"""Backbones give the same features as the libraries they wrap, on the same weights."""

import copy
from types import SimpleNamespace

import open_clip
from open_clip.model import resize_pos_embed
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from partsearch.hub import minilm_dir
from partsearch.model.backbones import build_image_backbone, build_text_backbone

from conftest import BERT_VOCAB, tiny_config


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-16").eval()


def test_bert_backbone_loads_minilm_offline_like_automodel():
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    batch = tok(["a woman in a red coat", "a man with black trousers and a backpack"], padding=True, return_tensors="pt")
    backbone = build_text_backbone(tiny_config(text_weights="minilm"), tok.vocab_size).eval()
    reference = AutoModel.from_pretrained(minilm_dir()).eval()
    with torch.no_grad():
        out = backbone(batch["input_ids"], batch["attention_mask"])
        expected = reference(**batch).last_hidden_state
    assert backbone.out_dim == 384
    assert torch.allclose(out.tokens, expected, atol=1e-5)


def test_clip_image_tower_from_a_224_state_dict_matches_open_clip(tmp_path, clip_model):
    path = tmp_path / "clip_visual.pt"
    torch.save(clip_model.visual.state_dict(), path)
    backbone = build_image_backbone(tiny_config(image_backbone="clip_vit_b16", image_weights=str(path)), (64, 32)).eval()
    # open_clip's own resampling of the 224 position embeddings, on a copy of its own model.
    reference = copy.deepcopy(clip_model)
    state = {"visual.positional_embedding": clip_model.visual.positional_embedding.detach()}
    resize_pos_embed(state, SimpleNamespace(visual=SimpleNamespace(grid_size=(4, 2))))
    reference.visual.positional_embedding = torch.nn.Parameter(state["visual.positional_embedding"])
    images = torch.randn(2, 3, 64, 32)
    captured = {}
    reference.visual.ln_post.register_forward_hook(lambda m, i, o: captured.update(tokens=o))
    with torch.no_grad():
        out = backbone(images)
        pooled = reference.encode_image(images)
    assert out.grid == (4, 2) and out.tokens.shape == (2, 8, 512) and out.mask.all()
    assert torch.allclose(out.tokens, captured["tokens"][:, 1:] @ reference.visual.proj, atol=1e-5)
    assert torch.allclose(captured["tokens"][:, 0] @ reference.visual.proj, pooled, atol=1e-5)


def test_clip_text_tower_end_of_text_token_is_open_clips_text_embedding(tmp_path, clip_model):
    path = tmp_path / "clip.pt"
    text_state = {k: v for k, v in clip_model.state_dict().items() if not k.startswith("visual.")}
    torch.save(text_state, path)
    backbone = build_text_backbone(tiny_config(text_backbone="clip_text", text_weights=str(path)), 49408).eval()
    ids = open_clip.get_tokenizer("ViT-B-16")(["a woman in a red coat", "a man with black trousers"])
    mask = ids != 0
    length = int(mask.sum(1).max())
    with torch.no_grad():
        out = backbone(ids[:, :length], mask[:, :length])
        expected = clip_model.encode_text(ids)
    eot = ids.argmax(dim=-1)
    assert out.tokens.shape == (2, length, 512) and torch.equal(out.mask, mask[:, :length])
    assert torch.allclose(out.tokens[torch.arange(2), eot], expected, atol=1e-5)


def test_random_bert_has_the_configured_size():
    backbone = build_text_backbone(tiny_config(text_width=64, text_layers=2), BERT_VOCAB)
    assert backbone.out_dim == 64 and len(backbone.stages()) == 2
