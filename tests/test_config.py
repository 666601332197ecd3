import pytest

from partsearch.config import Config, ConfigError, load_config


def test_defaults_follow_method_md():
    cfg = Config()
    assert cfg.model.num_coarse == 6 and cfg.model.num_fine == 6
    assert cfg.loss.margin == 0.2 and cfg.loss.commonality == "soft_rank"
    assert cfg.train.epochs == 60 and cfg.train.warmup_epochs == 5


def test_yaml_file_and_dotted_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.01\nmodel:\n  dim: 64\n")
    cfg = load_config(path, ["train.lr=1e-4", "data.image_size=[64, 32]"])
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.model.dim == 64
    assert cfg.data.image_size == (64, 32)


def test_unknown_key_names_nearest_valid_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rat: 0.01\n")
    with pytest.raises(ConfigError, match="train.learning_rat"):
        load_config(path)
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_config(None, ["train.epoch=3"])


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config(None, ["trian.lr=1"])


def test_wrong_type_names_the_field():
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=many"])


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["model.dim=96", "train.milestones=[3, 7]"])
    cfg.dump(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
