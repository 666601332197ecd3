"""The transformer image backbones: timm's ViT-B/16 [paper], a small ViT for CPU and the open_clip
ViT-B/16 image tower [ours]. Each gives the patch tokens (the class token dropped)."""

from __future__ import annotations

import torch
from torch import nn

from partsearch.config import ConfigError
from partsearch.hub import WeightsSource
from partsearch.model.backbones.base import Backbone, BackboneOutput
from partsearch.model.backbones.weights import (hub_error, load_local_only, load_weights_into, open_clip_model,
                                                read_state_dict)

VIT_MODEL = "vit_base_patch16_224"


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
            raise hub_error("ViT-B/16 (timm)", source.location, err) from None
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
        load_local_only(self, source, "small_vit")


class ClipViTB16(Backbone):
    """[ours] The open_clip ViT-B/16 image tower. Tokens are the patch tokens after `ln_post`,
    projected by the tower's `proj` into CLIP's joint 512-d space (as IRRA does for all tokens),
    so the class token's version of them is exactly open_clip's `encode_image` output.
    Position embeddings are built for `image_size`; pretrained ones are resampled bicubically.
    A local file is a state dict of the whole CLIP model (parameter names are the same, the text
    keys are ignored) or of the image tower alone."""

    def __init__(self, source: WeightsSource, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.visual = open_clip_model(source, tuple(image_size)).visual
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
