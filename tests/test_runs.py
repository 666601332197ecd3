"""`runs.fingerprint`: what ties an index, a work cache and a match threshold to one model."""

import torch
from torch import nn

from partsearch.config import Config, load_config
from partsearch.runs import config_identity, fingerprint


def test_a_key_at_its_default_does_not_enter_the_fingerprint(monkeypatch):
    # an index built before a version added a key (here `model.grad_checkpointing`, at its default)
    # must still match
    model, cfg = nn.Linear(3, 2), Config()
    now = fingerprint(model, cfg)
    full = Config.to_dict

    def without_the_new_key(self):
        out = full(self)
        del out["model"]["grad_checkpointing"]
        return out

    monkeypatch.setattr(Config, "to_dict", without_the_new_key)
    assert fingerprint(model, cfg) == now


def test_a_changed_value_or_weight_changes_the_fingerprint():
    model = nn.Linear(3, 2)
    base = fingerprint(model, Config())
    assert fingerprint(model, load_config(None, ["model.dim=64"])) != base
    assert config_identity(load_config(None, ["model.dim=64"]))["model"] == {"dim": 64}
    with torch.no_grad():
        model.bias.add_(1.0)
    assert fingerprint(model, Config()) != base
