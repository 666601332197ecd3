import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from partsearch.config import ConfigError
from partsearch.data.formats import load_dataset
from partsearch.errors import CheckpointError
from partsearch.losses.criterion import PartSearchCriterion
from partsearch.runs import load_checkpoint, load_run
from partsearch.train.checkpoint import save_checkpoint
from partsearch.train.engine import TrainingError, train


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def scripted_evaluator(r1_values):
    calls = []

    def evaluator(model, split):
        calls.append(split)
        r1 = r1_values[len(calls) - 1]
        return {"t2i": {"R1": r1, "R5": r1, "R10": r1, "mAP": r1, "mINP": r1}, "queries": 1, "gallery": 1}

    evaluator.calls = calls
    return evaluator


def test_run_directory_holds_config_logs_events_and_checkpoints(tiny_cfg, tmp_path):
    run = train(tiny_cfg("train.max_steps=3"), tmp_path / "run")
    assert {"config.yaml", "metrics.jsonl", "tb", "last.pt", "best.pt"} <= {p.name for p in run.iterdir()}
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    lines = [r for r in records(run) if "loss" in r]
    assert [r["step"] for r in lines] == [1, 2, 3]
    for key in ("epoch", "lr", "images_per_s", "id_global", "rank_coarse", "cmr", "cmr_margin"):
        assert key in lines[0]
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 3 and ckpt["batch"] == 3 and ckpt["epoch"] == 0
    assert {"python", "numpy", "torch"} <= set(ckpt["rng"])


def training_objective(cfg, checkpoint_path):
    """The summed loss over the whole (un-augmented) training set for a checkpoint's weights."""
    from partsearch.data.datasets import build_train_loader
    from partsearch.model.backbones import build_image_transform, build_tokenizer

    payload = load_checkpoint(checkpoint_path)
    loaded = load_run(checkpoint_path.parent, str(checkpoint_path))
    criterion = PartSearchCriterion(cfg.loss, payload["num_classes"], 32, 2, 2)
    criterion.load_state_dict(payload["criterion"])
    splits = load_dataset("SynthPEDES", cfg.data.root)
    loader = build_train_loader(cfg, splits.train, splits.image_root, build_tokenizer(cfg.model, cfg.data.max_tokens),
                                build_image_transform(cfg.model, cfg.data, train=True))
    loaded.model.train()  # the objective as trained: with the token attention maps (dropout is 0 here)
    total = 0.0
    with torch.no_grad():
        for batch in loader:
            img, txt = loaded.model(batch["image"], batch["ids"], batch["mask"])
            total += float(sum(criterion(img, txt, batch["label"]).values()))
    return total


def test_a_few_steps_lower_the_training_loss(tiny_cfg, tmp_path):
    clean = ("data.flip=false", "data.pad_crop=0", "data.random_erasing=0", "train.lr=1e-2")
    first = train(tiny_cfg(*clean, "train.max_steps=1"), tmp_path / "run") / "last.pt"
    early = first.with_name("step1.pt")
    first.rename(early)
    first.write_bytes(early.read_bytes())
    train(tiny_cfg(*clean, "train.max_steps=6"), tmp_path / "run", resume=True)
    cfg = tiny_cfg(*clean)
    assert training_objective(cfg, first) < 0.9 * training_objective(cfg, early)


def random_drawing_evaluator(model, split):
    """An evaluator that consumes every RNG stream, as data loaders and augmentations may."""
    r1 = float(torch.rand(1)) + random.random() + float(np.random.rand())
    return {"t2i": {"R1": r1}}


def test_four_steps_equal_two_steps_then_resume_then_two(tiny_cfg, tmp_path):
    straight = train(tiny_cfg("train.max_steps=4"), tmp_path / "straight", evaluator=random_drawing_evaluator)
    train(tiny_cfg("train.max_steps=2"), tmp_path / "resumed", evaluator=random_drawing_evaluator)
    resumed = train(tiny_cfg("train.max_steps=4"), tmp_path / "resumed", resume=True,
                    evaluator=random_drawing_evaluator)
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["step"] == b["step"] == 4
    for name in ("model", "criterion"):
        for key, value in a[name].items():
            torch.testing.assert_close(b[name][key], value, rtol=1e-5, atol=1e-6, msg=f"{name}.{key}")
    assert [r["loss"] for r in records(straight) if "loss" in r] == pytest.approx(
        [r["loss"] for r in records(resumed) if "loss" in r], rel=1e-5)


def test_best_checkpoint_is_the_epoch_with_the_best_val_r1(tiny_cfg, tmp_path):
    evaluator = scripted_evaluator([10.0, 30.0, 20.0])
    run = train(tiny_cfg("train.epochs=3"), tmp_path / "run", evaluator=evaluator)
    assert evaluator.calls == ["val", "val", "val"]
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["epoch"] == 2 and best["best"] == 30.0 and last["epoch"] == 3
    assert "val" in best["selection"]
    evals = [r for r in records(run) if "eval" in r]
    assert [r["selected"] for r in evals] == [True, True, False]


def test_test_split_selection_is_labelled(tiny_cfg, tmp_path):
    run = train(tiny_cfg("train.epochs=1", "train.eval_split=test"), tmp_path / "run",
                evaluator=scripted_evaluator([5.0]))
    evals = [r for r in records(run) if "eval" in r]
    assert evals[0]["split"] == "test" and evals[0]["note"] == "selected on TEST split"
    assert "TEST" in load_checkpoint(run / "best.pt")["selection"]


def test_without_a_val_split_best_is_the_last_epoch_and_says_so(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg("train.epochs=2")
    splits = load_dataset("SynthPEDES", cfg.data.root)
    splits.val = None
    evaluator = scripted_evaluator([])
    run = train(cfg, tmp_path / "run", evaluator=evaluator, splits=splits)
    assert evaluator.calls == []
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == 2 and "no val split" in best["selection"]
    assert "no val split" in capsys.readouterr().out


def test_non_finite_loss_stops_naming_the_step_and_the_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    train(tiny_cfg("train.max_steps=2"), tmp_path / "run")
    real_forward = PartSearchCriterion.forward

    def nan_forward(self, *args):
        losses = real_forward(self, *args)
        losses["cmr"] = losses["cmr"] * float("nan")
        return losses

    monkeypatch.setattr(PartSearchCriterion, "forward", nan_forward)
    with pytest.raises(TrainingError, match=r"step 3 .*last\.pt \(step 2\)"):
        train(tiny_cfg(), tmp_path / "run", resume=True)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2


@pytest.mark.parametrize("override,key", [
    ("model.image_backbone=resnet5", "model.image_backbone"),
    ("loss.commonality=easiest", "loss.commonality"),
    ("train.optimizer=sgd", "train.optimizer"),
])
def test_unknown_choice_stops_before_any_work(tiny_cfg, tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        train(tiny_cfg(override), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_cfg, tmp_path):
    with pytest.raises(CheckpointError, match="last.pt does not exist"):
        train(tiny_cfg(), tmp_path / "run", resume=True)


def test_training_into_a_directory_holding_a_run_is_refused_and_keeps_it(tiny_cfg, tmp_path):
    run = train(tiny_cfg("train.max_steps=1"), tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in ("best.pt", "last.pt", "metrics.jsonl")}
    with pytest.raises(CheckpointError, match=r"already holds a run .*--resume.*--overwrite"):
        train(tiny_cfg("train.max_steps=2"), run)
    assert {name: (run / name).read_bytes() for name in before} == before


def test_overwrite_replaces_the_run_without_mixing_the_logs(tiny_cfg, tmp_path):
    run = train(tiny_cfg("train.max_steps=3"), tmp_path / "run")
    train(tiny_cfg("train.max_steps=1"), run, overwrite=True)
    assert [r["step"] for r in records(run) if "loss" in r] == [1]
    assert load_checkpoint(run / "best.pt")["step"] == 1


def test_train_command_refuses_an_existing_run_before_loading_data(tmp_path, capsys):
    from partsearch.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("data:\n  root: /nonexistent\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.pt").write_bytes(b"old run")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "run" / "best.pt").read_bytes() == b"old run"


def test_run_config_stores_a_relative_data_root_relative_to_the_run(tiny_cfg, synth_root, tmp_path, monkeypatch):
    import os

    from partsearch.config import load_config
    from partsearch.runs import run_data_path

    monkeypatch.chdir(synth_root.parent)
    run = train(tiny_cfg("train.max_steps=1", f"data.root={synth_root.name}"), tmp_path / "run")
    stored = load_config(run / "config.yaml").data.root
    assert stored == os.path.relpath(synth_root, run)
    monkeypatch.chdir(tmp_path)
    assert Path(run_data_path(run, stored)).resolve() == synth_root.resolve()


def test_load_run_rebuilds_the_trained_model(tiny_cfg, tmp_path):
    run = train(tiny_cfg("train.max_steps=2"), tmp_path / "run")
    loaded = load_run(run, "last")
    state = load_checkpoint(run / "last.pt")["model"]
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not loaded.model.training
    assert loaded.fingerprint == load_run(run, "best").fingerprint
    ids = loaded.tokenizer(["a man in a red shirt"])
    assert loaded.model.encode_text(ids.ids, ids.mask).global_.shape == (1, 32)


def test_a_checkpoint_that_still_holds_the_old_scaler_entry_loads_and_resumes(tiny_cfg, tmp_path):
    run = train(tiny_cfg("train.max_steps=1"), tmp_path / "run")
    payload = load_checkpoint(run / "last.pt")
    assert "scaler" not in payload
    save_checkpoint(run / "last.pt", {**payload, "scaler": None})
    assert load_run(run, "last").fingerprint == load_run(run, "best").fingerprint
    train(tiny_cfg("train.max_steps=2"), run, resume=True)
    assert load_checkpoint(run / "last.pt")["step"] == 2


def test_load_run_with_a_mismatching_config_lists_the_keys(tiny_cfg, tmp_path):
    run = train(tiny_cfg("train.max_steps=1"), tmp_path / "run")
    text = (run / "config.yaml").read_text().replace("dim: 32", "dim: 64")
    (run / "config.yaml").write_text(text)
    with pytest.raises(CheckpointError, match=r"model\.dim: 32 -> 64") as err:
        load_run(run, "last")
    assert "checkpoint (32," in str(err.value)



def test_train_command_trains_evaluates_and_summarises(tiny_cfg, tmp_path, capsys):
    import yaml

    from partsearch.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_cfg().to_dict()))
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--max-steps", "2",
                 "train.log_every=2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "done:" in out and str(tmp_path / "run") in out and "val split" in out
    evals = [r for r in records(tmp_path / "run") if "eval" in r]
    assert len(evals) == 1 and {"R1", "R5", "R10", "mAP"} <= set(evals[0]["eval"]["t2i"])


def test_train_command_rejects_an_unknown_key_with_exit_code_2(tmp_path, capsys):
    from partsearch.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 1\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "train.lr_factor=2"]) == 2
    assert "train.lr_factor" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_time_limit_stops_after_the_first_step_with_a_checkpoint(tiny_cfg, tmp_path, capsys):
    run = train(tiny_cfg("train.time_limit_min=1e-6"), tmp_path / "run")
    assert load_checkpoint(run / "last.pt")["step"] == 1
    assert "time limit" in capsys.readouterr().out


def test_progress_with_max_steps_counts_only_the_epochs_the_run_reaches(tiny_cfg, tmp_path, capsys):
    train(tiny_cfg("train.epochs=10", "train.max_steps=2"), tmp_path / "run")
    err = capsys.readouterr().err
    assert "epoch 1/1 (stops at step 2)" in err and "1/10" not in err


def test_best_and_last_share_one_copy_on_disk_when_they_are_the_same_checkpoint(tiny_cfg, tmp_path):
    import os

    run = train(tiny_cfg("train.max_steps=1"), tmp_path / "run")
    assert os.stat(run / "best.pt").st_ino == os.stat(run / "last.pt").st_ino


def test_rewriting_last_never_changes_a_linked_best(tiny_cfg, tmp_path):
    evaluator = scripted_evaluator([50.0, 10.0])
    run = train(tiny_cfg("train.epochs=2"), tmp_path / "run", evaluator=evaluator)
    assert load_checkpoint(run / "best.pt")["epoch"] == 1 and load_checkpoint(run / "last.pt")["epoch"] == 2


def test_a_run_records_the_kernels_threads_and_torch_it_trained_with(tiny_cfg, tmp_path):
    run = train(tiny_cfg("train.max_steps=2"), tmp_path / "run")
    sessions = json.loads((run / "environment.json").read_text())["sessions"]
    assert len(sessions) == 1
    assert sessions[0]["from_step"] == 0
    assert sessions[0]["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert sessions[0]["threads"] == torch.get_num_threads()
    assert sessions[0]["torch"] == torch.__version__


def test_a_resume_on_other_kernels_is_recorded_and_named(tiny_cfg, tmp_path, monkeypatch, capsys):
    run = train(tiny_cfg("train.max_steps=2"), tmp_path / "run")
    capsys.readouterr()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "OTHER")
    train(tiny_cfg("train.max_steps=4"), run, resume=True)
    printed = capsys.readouterr().out
    sessions = json.loads((run / "environment.json").read_text())["sessions"]
    assert [s["from_step"] for s in sessions] == [0, 2]
    assert sessions[1]["cpu_kernels"] == "OTHER"
    assert "resumes at step 2 with cpu_kernels OTHER where it ran with cpu_kernels" in printed


def test_a_resume_on_the_same_numerics_prints_no_note(tiny_cfg, tmp_path, capsys):
    run = train(tiny_cfg("train.max_steps=2"), tmp_path / "run")
    train(tiny_cfg("train.max_steps=4"), run, resume=True)
    assert "resumes at step" not in capsys.readouterr().out
