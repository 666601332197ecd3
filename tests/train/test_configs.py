from pathlib import Path

import pytest

from partsearch.config import load_config
from partsearch.train.engine import check_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_every_expected_config_exists():
    names = {p.stem for p in CONFIGS}
    expected = {"synth_cpu"} | {f"{d}_{b}_bert" for d in ("cuhk", "icfg", "rstp") for b in ("r50", "vitb16")}
    expected |= {f"{d}_clip_vitb16" for d in ("cuhk", "icfg", "rstp")}
    assert expected <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_passes_the_pre_training_checks(path):
    cfg = load_config(path)
    check_config(cfg)
    if not path.stem.startswith("synth_cpu"):  # the paper settings; synth_cpu* are the CPU demo configs
        assert cfg.data.image_size == (384, 128) and cfg.data.batch_size == 64 and cfg.train.epochs == 60
        assert cfg.model.dim == 512 and cfg.data.root.startswith("data/")


def test_paper_configs_use_the_method_md_defaults():
    cfg = load_config(next(p for p in CONFIGS if p.stem == "cuhk_r50_bert"))
    assert (cfg.model.image_backbone, cfg.model.text_backbone, cfg.model.text_weights) == (
        "resnet50", "bert", "bert-base-uncased")
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.backbone_lr_factor) == ("adam", 1e-3, 0.1)
    assert (cfg.train.warmup_epochs, cfg.train.scheduler) == (5, "cosine")
    assert cfg.loss.commonality == "soft_rank" and cfg.loss.cmr == 1.0
