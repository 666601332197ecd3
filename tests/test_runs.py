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


def _environment(tmp_path, sessions):
    import json

    (tmp_path / "environment.json").write_text(json.dumps({"sessions": sessions}))
    return tmp_path


SESSION = {"from_step": 0, "torch": "2.14.1", "threads": 2, "cpu_kernels": "AVX2", "cpu": "AMD EPYC", "device": "cpu"}


def test_a_run_describes_what_trained_it(tmp_path):
    from partsearch.runs import describe_environment

    run = _environment(tmp_path, [SESSION, {**SESSION, "from_step": 300}])  # a resume on the same machine
    assert describe_environment(run) == "torch 2.14.1, 2 threads, AVX2 kernels (AMD EPYC)"


def test_a_run_resumed_on_other_kernels_says_from_which_step(tmp_path):
    from partsearch.runs import describe_environment

    run = _environment(tmp_path, [SESSION, {**SESSION, "from_step": 300, "cpu_kernels": "AVX512", "cpu": "Xeon"}])
    assert describe_environment(run) == ("torch 2.14.1, 2 threads, AVX2 kernels (AMD EPYC); "
                                         "from step 300: torch 2.14.1, 2 threads, AVX512 kernels (Xeon)")


def test_a_run_without_a_record_describes_nothing(tmp_path):
    from partsearch.runs import describe_environment

    assert describe_environment(tmp_path) is None
    (tmp_path / "environment.json").write_text("{not json")
    assert describe_environment(tmp_path) is None
