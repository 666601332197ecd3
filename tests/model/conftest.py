"""Tiny random model configurations for the model tests."""

import dataclasses

import pytest

from partsearch.config import ModelConfig

BERT_VOCAB = 30522


def tiny_config(**changes) -> ModelConfig:
    """A random-init model small enough for a CPU test: 32-wide 1-layer BERT, 32-wide heads."""
    base = ModelConfig(
        image_backbone="small_cnn", image_weights="random", image_width=32,
        text_backbone="bert", text_weights="random", text_width=32, text_layers=1,
        dim=32, num_coarse=3, num_fine=4, encoder_heads=4, decoder_heads=4, dropout=0.0,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return tiny_config()
