"""Image transforms (torchvision.transforms.v2), after the ResNet/BERT person-search lineage:
resize, horizontal flip, pad + random crop, normalise, random erasing (METHOD.md, Training defaults)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from partsearch.config import DataConfig


def build_transforms(data_cfg: DataConfig, train: bool, mean: tuple[float, float, float],
                     std: tuple[float, float, float]) -> v2.Compose:
    """PIL image -> float tensor `(3, H, W)` at `data_cfg.image_size`, normalised by `mean`/`std`
    (the model's, `partsearch.model.backbones.build_image_transform`)."""
    size = list(data_cfg.image_size)
    steps: list = [v2.ToImage(), v2.Resize(size, antialias=True)]
    if train:
        if data_cfg.flip:
            steps.append(v2.RandomHorizontalFlip())
        if data_cfg.pad_crop > 0:
            steps += [v2.Pad(data_cfg.pad_crop), v2.RandomCrop(size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train and data_cfg.random_erasing > 0:
        steps.append(v2.RandomErasing(p=data_cfg.random_erasing))
    return v2.Compose(steps)
