"""Train and test transforms: shape, dtype, normalisation."""

import torch
from PIL import Image

from partsearch.config import DataConfig
from partsearch.data.transforms import build_transforms

HALF = (0.5, 0.5, 0.5)


def test_train_transform_gives_float_tensor_of_image_size():
    cfg = DataConfig(image_size=(48, 24), pad_crop=4, random_erasing=1.0)
    out = build_transforms(cfg, True, HALF, HALF)(Image.new("RGB", (30, 70), (200, 10, 10)))
    assert out.shape == (3, 48, 24) and out.dtype == torch.float32


def test_test_transform_is_deterministic_and_normalised():
    cfg = DataConfig(image_size=(32, 16))
    transform = build_transforms(cfg, False, HALF, HALF)
    image = Image.new("RGB", (20, 40), (255, 0, 255))
    out = transform(image)
    assert out.shape == (3, 32, 16)
    assert torch.allclose(out[:, 5, 5], torch.tensor([1.0, -1.0, 1.0]))
    assert torch.equal(out, transform(image))


def test_random_erasing_changes_train_images():
    cfg = DataConfig(image_size=(32, 16), flip=False, pad_crop=0, random_erasing=1.0)
    image = Image.new("RGB", (16, 32), (120, 120, 120))
    torch.manual_seed(0)
    out = build_transforms(cfg, True, HALF, HALF)(image)
    plain = build_transforms(cfg, False, HALF, HALF)(image)
    assert not torch.equal(out, plain)
