"""A tiny SynthPEDES (12 ids, 64x32) and a tiny model config for end-to-end training tests."""

import pytest

from partsearch.config import load_config

TRAIN = ["model.dropout=0.0", "train.epochs=2", "train.log_every=1", "train.lr=3e-3"]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from partsearch.data.synth import generate

    return generate(tmp_path_factory.mktemp("data") / "synth", num_ids=12, seed=0, size=(64, 32))


@pytest.fixture
def tiny_cfg(synth_root, tiny_overrides):
    def make(*overrides):
        return load_config(None, [*tiny_overrides, *TRAIN, f"data.root={synth_root}", *overrides])

    return make
