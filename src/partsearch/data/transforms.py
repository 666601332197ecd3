"""Image transforms (torchvision.transforms.v2), after the ResNet/BERT person-search lineage:
resize, horizontal flip, pad + random crop, normalise, random erasing (METHOD.md, Training defaults).
[ours] Optional augmentation for real crops: colour jitter and Gaussian blur."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from partsearch.config import DataConfig
from partsearch.errors import ConfigError


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
        steps += photometric(data_cfg)
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train and data_cfg.random_erasing > 0:
        steps.append(v2.RandomErasing(p=data_cfg.random_erasing))
    return v2.Compose(steps)


def photometric(data_cfg: DataConfig) -> list:
    """The train-time colour jitter and blur of `data_cfg` (none when both are off), on uint8 images.
    The blur's kernel grows with the image: 5 pixels at 64 wide, 11 at 128."""
    steps: list = []
    brightness, contrast, saturation, hue = data_cfg.color_jitter
    if hue > 0.5:
        raise ConfigError(f"data.color_jitter: hue (the 4th value) must be at most 0.5, got {hue}; "
                          "keep it at 0 when captions name colours", key="data.color_jitter")
    if any(data_cfg.color_jitter):
        steps.append(v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue))
    if data_cfg.blur > 0:
        kernel = max(3, min(data_cfg.image_size) // 12 | 1)
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 0.3 * kernel))], p=data_cfg.blur))
    return steps



class RealCropShift:
    """[ours] The test-time transform, then one fixed shift towards what camera crops look like next
    to SynthPEDES' flat colours: darker, lower contrast, greyer and softer. Deterministic (no
    randomness), so a run's val split seen through it gives the same embeddings on every call. The
    level-weight fit (`eval/fusion.py`) scores val through it as well as plain, as a stand-in for
    real footage that a synthetic val split does not show."""

    def __init__(self, data_cfg: DataConfig, mean: tuple[float, float, float], std: tuple[float, float, float],
                 brightness: float = 0.7, contrast: float = 0.8, saturation: float = 0.5, sigma: float = 1.0):
        kernel = max(3, min(data_cfg.image_size) // 12 | 1)
        self.resize = v2.Compose([v2.ToImage(), v2.Resize(list(data_cfg.image_size), antialias=True)])
        self.blur = v2.GaussianBlur(kernel, sigma=sigma)
        self.normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, image) -> torch.Tensor:
        x = self.resize(image)
        x = v2.functional.adjust_brightness(x, self.brightness)
        x = v2.functional.adjust_contrast(x, self.contrast)
        x = v2.functional.adjust_saturation(x, self.saturation)
        return self.normalize(self.blur(x))
