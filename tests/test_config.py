from pathlib import Path

import pytest

from partsearch.config import Config, ConfigError, load_config, shipped_config


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


@pytest.mark.parametrize("override", ["train.lr=.nan", "train.lr=.inf", "loss.margin=-.inf"])
def test_a_non_finite_number_is_refused_naming_the_field(override):
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]}: expected a finite number"):
        load_config(None, [override])


@pytest.mark.parametrize("override,message", [
    ("data.batch_size=0", "data.batch_size: must be >= 1, got 0"),
    ("data.num_workers=-1", "data.num_workers: must be >= 0, got -1"),
    ("data.image_size=[0, 0]", r"data.image_size: every value must be >= 16, got \[0, 0\]"),
    ("loss.margin=-5", "loss.margin: must be >= 0, got -5"),
    ("data.random_erasing=1.5", "data.random_erasing: must be between 0 and 1, got 1.5"),
    ("model.num_fine=0", "model.num_fine: must be >= 1, got 0"),
    ("model.attention_dropout=1.5", "model.attention_dropout: must be between 0 and 1, got 1.5"),
])
def test_a_value_outside_its_limits_is_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_an_optional_value_left_unset_passes_the_limits():
    assert load_config(None, ["model.attention_dropout=null"]).model.attention_dropout is None


def test_every_shipped_config_is_within_the_limits():
    from pathlib import Path

    for path in sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")):
        load_config(path)


@pytest.mark.parametrize("override,meant", [
    ("train.learning_rate=1e-3", "lr"), ("train.LR=1e-3", "lr"), ("data.bs=8", "batch_size"),
    ("train.epoch=3", "epochs"), ("train.weight_decy=0", "weight_decay"),
])
def test_did_you_mean_suggests_the_key_that_was_meant(override, meant):
    with pytest.raises(ConfigError, match=f"did you mean '{meant}'"):
        load_config(None, [override])


def test_a_bad_key_from_the_command_line_is_not_blamed_on_the_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.LR=1e-3"])
    assert str(err.value).startswith("command line: unknown config key 'train.LR'")
    assert str(path) not in str(err.value)


def test_a_bad_key_in_the_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  LR: 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: unknown config key 'train.LR'"):
        load_config(path, ["train.epochs=2"])


def test_the_footage_config_is_the_demo_config_with_a_pretrained_trunk_and_augmentation():
    # ... the attention dropout it was measured with on real people (0.1; the demo's is 0) and the
    # concentration of its coarse tokens (its tokens read the floor without it)
    from pathlib import Path

    configs = Path(__file__).parent.parent / "configs"
    demo = load_config(configs / "synth_cpu.yaml").to_dict()
    footage = load_config(configs / "synth_cpu_footage.yaml").to_dict()
    changed = {f"{section}.{key}" for section in demo for key in demo[section]
               if demo[section][key] != footage[section][key]}
    assert changed == {"data.color_jitter", "data.blur", "model.image_backbone", "model.image_weights",
                       "model.freeze_image", "train.backbone_lr_factor", "model.attention_dropout",
                       "loss.concentration"}
    assert footage["model"]["image_backbone"] == "mobilenet_v2_os8"


def test_the_shipped_configs_are_the_checkout_configs():
    checkout = Path(__file__).parent.parent / "configs" / "synth_cpu.yaml"
    assert shipped_config("synth_cpu.yaml").read_text() == checkout.read_text()


def test_an_unknown_shipped_config_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="no shipped config named 'nope.yaml'.*synth_cpu.yaml"):
        shipped_config("nope.yaml")


def test_configs_path_outside_a_checkout_reads_the_shipped_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("configs/synth_cpu.yaml").to_dict() == load_config(shipped_config("synth_cpu.yaml")).to_dict()
    assert load_config("synth_cpu.yaml").model.text_weights == "minilm"


def test_a_local_file_wins_over_the_shipped_config_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "synth_cpu.yaml").write_text("train:\n  epochs: 3\n")
    assert load_config("configs/synth_cpu.yaml").train.epochs == 3


def test_a_removed_option_at_its_old_default_is_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="loss.label_smoothing: removed option at its default"):
        cfg = load_config(None, ["loss.label_smoothing=0.0"])
    assert cfg.to_dict() == Config().to_dict()


def test_a_removed_option_at_another_value_is_refused_naming_it():
    with pytest.raises(ConfigError, match="loss.negatives: this option was removed .* got 'semihard'"):
        load_config(None, ["loss.negatives=semihard"])


def test_a_removed_choice_is_refused_naming_it():
    with pytest.raises(ConfigError, match="loss.commonality: per_pair was removed"):
        load_config(None, ["loss.commonality=per_pair"])
