from dataclasses import replace

import pytest
import torch
from torch import nn

from partsearch.config import ConfigError, TrainConfig
from partsearch.train import optim
from partsearch.train.optim import build_optimizer, build_scheduler, check_train_config, lr_multiplier


class TwoPartModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def param_groups(self):
        return {"backbone": list(self.backbone.parameters()), "heads": list(self.head.parameters())}


def test_backbone_gets_the_reduced_lr_and_criterion_parameters_are_heads():
    cfg = TrainConfig(lr=1e-3, backbone_lr_factor=0.1, optimizer="adamw")
    criterion = nn.Linear(2, 3)
    opt = build_optimizer(cfg, TwoPartModel(), criterion)
    assert isinstance(opt, torch.optim.AdamW)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"backbone": pytest.approx(1e-4), "backbone_no_decay": pytest.approx(1e-4),
                   "heads": 1e-3, "heads_no_decay": 1e-3}
    heads = {id(p) for g in opt.param_groups if g["name"].startswith("heads") for p in g["params"]}
    assert all(id(p) in heads for p in criterion.parameters())
    assert all(g["weight_decay"] == 0 for g in opt.param_groups if g["name"].endswith("no_decay"))


def test_frozen_parameters_are_not_optimized():
    model = TwoPartModel()
    model.backbone.requires_grad_(False)
    opt = build_optimizer(TrainConfig(), model, nn.Linear(2, 2))
    assert not any(g["name"].startswith("backbone") for g in opt.param_groups)


def test_warmup_is_linear_then_cosine_reaches_zero():
    cfg = TrainConfig(epochs=4, warmup_epochs=1, scheduler="cosine")
    f = lr_multiplier(cfg, steps_per_epoch=10)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == pytest.approx(1.0)
    assert f(25) == pytest.approx(0.5)
    assert f(40) == pytest.approx(0.0)


def test_multistep_decays_by_gamma_at_each_milestone_epoch():
    cfg = TrainConfig(epochs=10, warmup_epochs=0, scheduler="multistep", milestones=(2, 5), gamma=0.1)
    f = lr_multiplier(cfg, steps_per_epoch=3)
    assert [f(s) for s in (0, 5, 6, 14, 15)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_scheduler_steps_the_optimizer_lr_per_step():
    cfg = TrainConfig(lr=1.0, epochs=2, warmup_epochs=1)
    opt = build_optimizer(cfg, TwoPartModel(), nn.Linear(2, 2))
    sched = build_scheduler(cfg, opt, steps_per_epoch=2)
    heads = next(g for g in opt.param_groups if g["name"] == "heads")
    seen = [heads["lr"]]
    for _ in range(3):
        opt.step()
        sched.step()
        seen.append(heads["lr"])
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.5])


@pytest.mark.parametrize("key,value", [("optimizer", "sgd"), ("scheduler", "step"), ("precision", "fp16"),
                                       ("eval_split", "train"), ("device", "tpu"), ("channels_last", "yes"),
                                       ("fused_optimizer", "fused"), ("nan_check_every", -1)])
def test_unknown_train_choice_names_the_field(key, value):
    with pytest.raises(ConfigError, match=f"train.{key}"):
        check_train_config(replace(TrainConfig(), **{key: value}))


@pytest.mark.parametrize("setting,fused", [(True, True), (False, False)])
def test_fused_optimizer_switch_selects_the_fused_update(setting, fused):
    opt = build_optimizer(TrainConfig(fused_optimizer=setting), TwoPartModel(), nn.Linear(2, 2))
    assert bool(opt.defaults["fused"]) is fused


def test_auto_switches_follow_the_table_of_their_device(monkeypatch):
    monkeypatch.setitem(optim.AUTO, "channels_last", {"cuda": True, "cpu": False})
    cfg = TrainConfig(channels_last="auto")
    assert optim.switch_on(cfg, "channels_last", torch.device("cuda", 0))
    assert not optim.switch_on(cfg, "channels_last", torch.device("cpu"))
    assert optim.switch_on(replace(cfg, channels_last=True), "channels_last", torch.device("cpu"))


def test_speed_switches_read_true_false_or_auto_from_yaml():
    from partsearch.config import load_config

    cfg = load_config(None, ["train.channels_last=true", "train.fused_optimizer=false"]).train
    assert cfg.channels_last is True and cfg.fused_optimizer is False
    assert load_config(None, []).train.channels_last == "auto"
    check_train_config(cfg)
