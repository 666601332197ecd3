"""Backbone registry: every image and text backbone returns the same `BackboneOutput`.

The heads never ask which backbone they got (the timm idea of one feature method per model):
an image backbone maps `(B, 3, H, W)` to `h*w` patch tokens on a known grid, a text backbone maps
`(B, L)` token ids to `L` token states with the padding masked out.

Backbones [paper]: ResNet-50 with last stride 1 and ViT-B/16 (384x128 -> 24x8 grid), BERT.
[ours]: the open_clip ViT-B/16 image and text towers, and small from-scratch backbones
(`small_cnn`, `small_vit`) for the CPU default at 128x64 (16x8 grid).

Each registry entry also carries the backbone's preprocessing, in this one place: an image
backbone its normalisation mean/std (`data.mean`/`data.std` override it), a text backbone its
tokenizer (`build_image_transform`, `build_tokenizer`).

Weights (`image_weights`, `text_weights`): `random`; a local path (a state-dict file
.pt/.pth/.safetensors for image backbones and CLIP towers, a model directory for `bert`); or a hub
name: a torchvision weights name for resnet50 (`IMAGENET1K_V2`), a timm pretrained tag for vit_b16
(`augreg2_in21k_ft_in1k`), an open_clip pretrained tag for the CLIP towers (`openai`), a Hugging
Face name for bert (`bert-base-uncased`).

The families live in `cnn`, `vit` and `text`, weight loading in `weights`, the output contract
in `base`; this module is the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from partsearch.config import ConfigError, DataConfig, ModelConfig
from partsearch.data.tokenizers import Tokenizer, bert_tokenizer, clip_tokenizer
from partsearch.data.transforms import build_transforms
from partsearch.hub import WeightsSource, resolve_weights
from partsearch.model.backbones.base import Backbone, BackboneOutput
from partsearch.model.backbones.cnn import MobileNetV2, ResNet50, SmallCNN
from partsearch.model.backbones.text import Bert, ClipText
from partsearch.model.backbones.vit import ClipViTB16, SmallViT, ViTB16

__all__ = ["Backbone", "BackboneOutput", "build_image_backbone", "build_image_transform", "build_text_backbone",
           "build_tokenizer", "check_backbone_names", "image_normalization"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)


class ImageBackboneEntry:
    """An image backbone and the normalisation its weights expect (as timm's pretrained configs
    carry mean/std); `data.mean` / `data.std` override it."""

    build: Callable[[ModelConfig, WeightsSource, tuple[int, int]], Backbone]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)


class TextBackboneEntry:
    """A text backbone and the tokenizer its embeddings are indexed by."""

    build: Callable[[ModelConfig, WeightsSource, int], Backbone]
    tokenizer: Callable[[ModelConfig, int], Tokenizer]


IMAGE_BACKBONES: dict[str, ImageBackboneEntry] = {
    "resnet50": ImageBackboneEntry(lambda cfg, src, size: ResNet50(src, size), IMAGENET_MEAN, IMAGENET_STD),
    "vit_b16": ImageBackboneEntry(lambda cfg, src, size: ViTB16(src, size), IMAGENET_MEAN, IMAGENET_STD),
    "clip_vit_b16": ImageBackboneEntry(lambda cfg, src, size: ClipViTB16(src, size), CLIP_MEAN, CLIP_STD),
    "small_cnn": ImageBackboneEntry(lambda cfg, src, size: SmallCNN(src, size, cfg.image_width),
                                    IMAGENET_MEAN, IMAGENET_STD),
    "mobilenet_v2": ImageBackboneEntry(lambda cfg, src, size: MobileNetV2(src, size), IMAGENET_MEAN, IMAGENET_STD),
    "mobilenet_v2_os8": ImageBackboneEntry(lambda cfg, src, size: MobileNetV2(src, size, output_stride=8),
                                           IMAGENET_MEAN, IMAGENET_STD),
    "small_vit": ImageBackboneEntry(lambda cfg, src, size: SmallViT(src, size, cfg.image_width),
                                    IMAGENET_MEAN, IMAGENET_STD),
}

TEXT_BACKBONES: dict[str, TextBackboneEntry] = {
    "bert": TextBackboneEntry(lambda cfg, src, vocab: Bert(src, vocab, cfg.text_width, cfg.text_layers),
                              bert_tokenizer),
    "clip_text": TextBackboneEntry(lambda cfg, src, vocab: ClipText(src, vocab), clip_tokenizer),
}


def _lookup(registry: dict, name: str, field: str):
    if name not in registry:
        raise ConfigError(f"unknown model.{field} '{name}'; valid: {', '.join(registry)}")
    return registry[name]


def check_backbone_names(model_cfg: ModelConfig) -> None:
    """ConfigError for an image or text backbone name the registry does not know."""
    _lookup(IMAGE_BACKBONES, model_cfg.image_backbone, "image_backbone")
    _lookup(TEXT_BACKBONES, model_cfg.text_backbone, "text_backbone")


def image_normalization(model_cfg: ModelConfig, data_cfg: DataConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the image input: `data.mean` / `data.std` where given, else the backbone's."""
    entry = _lookup(IMAGE_BACKBONES, model_cfg.image_backbone, "image_backbone")
    return (tuple(data_cfg.mean) if data_cfg.mean is not None else entry.mean,
            tuple(data_cfg.std) if data_cfg.std is not None else entry.std)


def build_image_transform(model_cfg: ModelConfig, data_cfg: DataConfig, train: bool):
    """PIL image -> the model's normalised input `(3, H, W)` (`data.transforms.build_transforms`
    with the backbone's mean/std, or the config's override); `train` adds the augmentation."""
    mean, std = image_normalization(model_cfg, data_cfg)
    return build_transforms(data_cfg, train, mean, std)


def build_tokenizer(model_cfg: ModelConfig, max_length: int) -> Tokenizer:
    """The tokenizer of `model_cfg.text_backbone`, padding and truncating to `max_length` tokens."""
    entry = _lookup(TEXT_BACKBONES, model_cfg.text_backbone, "text_backbone")
    if max_length < 3:
        raise ConfigError(f"data.max_tokens={max_length} is too small; captions need at least 3 tokens")
    return entry.tokenizer(model_cfg, max_length)


def build_image_backbone(model_cfg: ModelConfig, image_size: tuple[int, int]) -> Backbone:
    """The configured image backbone, weights loaded and freezing applied; `.grid` is the token
    grid `(h, w)` it gives at `image_size` `(H, W)`."""
    entry = _lookup(IMAGE_BACKBONES, model_cfg.image_backbone, "image_backbone")
    backbone = entry.build(model_cfg, resolve_weights(model_cfg.image_weights), tuple(image_size))
    backbone.freeze(model_cfg.freeze_image, "freeze_image")
    if model_cfg.grad_checkpointing:
        backbone.enable_grad_checkpointing()
    return backbone


def build_text_backbone(model_cfg: ModelConfig, vocab_size: int) -> Backbone:
    """The configured text backbone, weights loaded and freezing applied."""
    entry = _lookup(TEXT_BACKBONES, model_cfg.text_backbone, "text_backbone")
    backbone = entry.build(model_cfg, resolve_weights(model_cfg.text_weights), vocab_size)
    backbone.freeze(model_cfg.freeze_text, "freeze_text")
    if model_cfg.grad_checkpointing:
        backbone.enable_grad_checkpointing()
    return backbone
