"""A tiny SynthPEDES (12 ids, 64x32) and a tiny model config for end-to-end training tests."""

import pytest

from partsearch.config import load_config

TINY = [
    "data.dataset=SynthPEDES", "data.image_size=[64, 32]", "data.batch_size=8", "data.instances_per_id=2",
    "data.num_workers=0", "data.max_tokens=24",
    "model.image_backbone=small_cnn", "model.image_width=32", "model.text_backbone=bert",
    "model.text_weights=random", "model.text_width=32", "model.text_layers=1", "model.dim=32",
    "model.num_coarse=2", "model.num_fine=2", "model.encoder_heads=4", "model.decoder_heads=4",
    "model.decoder_layers=1", "model.dropout=0.0",
    "train.epochs=2", "train.warmup_epochs=0", "train.log_every=1", "train.device=cpu", "train.lr=3e-3",
]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from partsearch.data.synth import generate

    return generate(tmp_path_factory.mktemp("data") / "synth", num_ids=12, seed=0, size=(64, 32))


@pytest.fixture
def tiny_cfg(synth_root):
    def make(*overrides):
        return load_config(None, [*TINY, f"data.root={synth_root}", *overrides])

    return make
