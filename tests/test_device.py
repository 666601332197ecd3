import pytest
import torch

from partsearch.device import autocast, resolve_device
from partsearch.errors import UserError


def test_auto_is_the_cpu_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert resolve_device("auto") == torch.device("cpu")


def test_a_wrong_device_names_the_option_and_the_valid_values():
    with pytest.raises(UserError, match="train.device=gpu0: not a device; use auto, cpu, cuda"):
        resolve_device("gpu0", name="train.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_says_to_use_the_cpu():
    with pytest.raises(UserError, match="--device=cuda: no CUDA device is visible; use --device=cpu"):
        resolve_device("cuda")


def test_auto_precision_keeps_fp32_on_the_cpu():
    with autocast(torch.device("cpu"), "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_precision_autocasts_matmuls():
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_fp32_precision_never_autocasts():
    with autocast(torch.device("cpu"), "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
