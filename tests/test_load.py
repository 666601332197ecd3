"""`partsearch.load`: the one way to get a trained model (DESIGN.md)."""

import pytest
import torch
import yaml
from PIL import Image

import partsearch
from partsearch.cli import main
from partsearch.config import load_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_overrides):
    from partsearch.data.synth import generate

    tmp = tmp_path_factory.mktemp("load")
    root = generate(tmp / "synth", num_ids=8, seed=0, size=(64, 32))
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(load_config(None, [*tiny_overrides, f"data.root={root}"]).to_dict()))
    assert main(["train", "--config", str(config), "--out", str(tmp / "run"), "--max-steps", "1"]) == 0
    return tmp / "run"


def test_load_gives_model_tokenizer_transform_and_config(run_dir):
    run = partsearch.load(run_dir, device="cpu")
    image = run.transform(Image.new("RGB", (40, 90), (200, 30, 30)))
    assert image.shape == (3, *run.cfg.data.image_size)
    tokens = run.tokenizer(["a man in a red coat"])
    with torch.no_grad():
        emb = run.model.encode_image(image[None])
        text = run.model.encode_text(tokens.ids, tokens.mask)
    assert emb.global_.shape == text.global_.shape == (1, run.cfg.model.dim)
    assert not run.model.training


def test_load_picks_the_device_when_asked_for_auto(run_dir):
    run = partsearch.load(run_dir, "last")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(run.model.parameters()).device.type == expected


def test_a_trained_run_keeps_the_level_weights_chosen_on_val_and_load_applies_them(run_dir):
    import json

    from partsearch.eval.fusion import GRID

    fitted = json.loads((run_dir / "level_weights.json").read_text())
    assert fitted["split"] == "val" and fitted["weights"][0] == 1.0
    assert fitted["weights"][1] in GRID and fitted["weights"][2] in GRID
    assert tuple(partsearch.load(run_dir, device="cpu").cfg.model.similarity_weights) == tuple(fitted["weights"])


def _with_config_entry(run_dir, tmp_path, section, key, value):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    values = yaml.safe_load((copy / "config.yaml").read_text())
    values[section][key] = value
    (copy / "config.yaml").write_text(yaml.safe_dump(values))
    return copy


def test_a_run_naming_a_removed_option_at_its_default_loads_with_a_warning(run_dir, tmp_path):
    old = _with_config_entry(run_dir, tmp_path, "model", "fine_head", False)
    with pytest.warns(UserWarning, match="model.fine_head: removed option at its default"):
        loaded = partsearch.load(old, device="cpu")
    assert loaded.fingerprint == partsearch.load(run_dir, device="cpu").fingerprint


def test_a_run_that_trained_with_a_removed_option_is_refused_naming_it(run_dir, tmp_path):
    from partsearch.errors import ConfigError

    old = _with_config_entry(run_dir, tmp_path, "model", "fine_head", True)
    with pytest.raises(ConfigError, match=r"config.yaml: model.fine_head: this option was removed .* got True"):
        partsearch.load(old, device="cpu")
