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


def _striped(h=32, w=16):
    image = Image.new("RGB", (w, h), (200, 40, 40))
    for x in range(0, w, 2):
        image.paste((20, 20, 200), (x, 0, x + 1, h))
    return image


def test_photometric_augmentation_is_off_by_default():
    cfg = DataConfig(image_size=(32, 16), flip=False, pad_crop=0, random_erasing=0.0)
    image = _striped()
    assert torch.equal(build_transforms(cfg, True, HALF, HALF)(image), build_transforms(cfg, False, HALF, HALF)(image))


def test_color_jitter_changes_colours_of_train_images_only():
    cfg = DataConfig(image_size=(32, 16), flip=False, pad_crop=0, random_erasing=0.0, color_jitter=(0.5, 0.5, 0.5, 0.0))
    image = _striped()
    torch.manual_seed(0)
    jittered = torch.stack([build_transforms(cfg, True, HALF, HALF)(image) for _ in range(4)])
    assert jittered.std(0).max() > 0.05  # four draws differ
    assert torch.equal(build_transforms(cfg, False, HALF, HALF)(image), build_transforms(cfg, False, HALF, HALF)(image))


def test_blur_smooths_train_images():
    cfg = DataConfig(image_size=(32, 16), flip=False, pad_crop=0, random_erasing=0.0, blur=1.0)
    image = _striped()
    torch.manual_seed(0)
    blurred = build_transforms(cfg, True, HALF, HALF)(image)
    sharp = build_transforms(cfg, False, HALF, HALF)(image)
    assert blurred[:, :, 1:].sub(blurred[:, :, :-1]).abs().mean() < 0.8 * sharp[:, :, 1:].sub(sharp[:, :, :-1]).abs().mean()


def test_hue_above_half_is_refused_with_the_key():
    import pytest

    from partsearch.errors import ConfigError
    with pytest.raises(ConfigError, match=r"data.color_jitter: hue \(the 4th value\) must be at most 0.5, got 0.7"):
        build_transforms(DataConfig(image_size=(32, 16), color_jitter=(0, 0, 0, 0.7)), True, HALF, HALF)


def test_real_crop_shift_is_deterministic_darker_greyer_and_softer_than_the_test_transform():
    from partsearch.data.transforms import RealCropShift

    pixels = torch.zeros(64, 32, 3, dtype=torch.uint8)
    pixels[:, :16, 0] = 220  # a red left half on black: colour, and an edge to soften
    image = Image.fromarray(pixels.numpy())
    cfg = DataConfig(image_size=(64, 32))
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    plain = build_transforms(cfg, train=False, mean=mean, std=std)(image)
    shift = RealCropShift(cfg, mean, std)
    shifted = shift(image)
    assert torch.equal(shifted, shift(image))
    assert shifted.mean() < plain.mean()
    saturation = lambda x: (x.max(dim=0).values - x.min(dim=0).values).mean()  # noqa: E731
    assert saturation(shifted) < saturation(plain)
    edge = lambda x: (x[0, :, 15] - x[0, :, 16]).abs().mean()  # noqa: E731
    assert edge(shifted) < 0.8 * edge(plain)
