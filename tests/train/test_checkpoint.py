import random

import numpy as np
import pytest
import torch

from partsearch.errors import CheckpointError
from partsearch.runs import FORMAT, load_checkpoint, load_state_checked
from partsearch.train.checkpoint import rng_state, save_checkpoint, set_rng_state


def payload(value):
    return {"format": FORMAT, "model": {"w": torch.full((3,), float(value))}, "step": value}


def test_checkpoint_round_trips_with_weights_only(tmp_path):
    save_checkpoint(tmp_path / "last.pt", payload(3))
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.full((3,), 3.0))


def test_crash_during_write_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload(1))
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:  # half of a file, then the process "dies"
            handle.truncate(handle.seek(0, 2) // 2)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, payload(2))
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_missing_or_foreign_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a partsearch checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_states_survive_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path / "c.pt", {"format": FORMAT, "rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_mismatching_weights_list_the_keys(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    state = {"0.weight": torch.zeros(5, 4), "0.bias": torch.zeros(3), "2.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError) as err:
        load_state_checked(model, state, "model", tmp_path / "x.pt", ["model.dim: 5 -> 3"])
    message = str(err.value)
    for piece in ("0.weight: checkpoint (5, 4) vs model (3, 4)", "missing 1.weight", "unexpected 2.weight",
                  "model.dim: 5 -> 3"):
        assert piece in message
