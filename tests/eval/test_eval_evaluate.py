"""evaluate_model / Evaluator / `partsearch eval` on a tiny SynthPEDES and a tiny model."""

import json

import pytest
import torch

from partsearch.cli import main as cli_main
from partsearch.config import load_config
from partsearch.data.formats import load_dataset
from partsearch.model.backbones import build_tokenizer
from partsearch.eval.evaluate import Evaluator, evaluate_model, format_table
from partsearch.eval.metrics import retrieval_metrics
from partsearch.model.model import build_model
from partsearch.model.similarity import level_similarities, similarity

EVAL = ["model.similarity_weights=[1.0, 0.5, 2.0]", "eval.batch_size=5"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory, tiny_overrides):
    from partsearch.data.synth import generate

    root = generate(tmp_path_factory.mktemp("eval_data") / "synth", num_ids=20, seed=1, size=(64, 32))
    cfg = load_config(None, [*tiny_overrides, *EVAL, f"data.root={root}"])
    splits = load_dataset("SynthPEDES", root, verbose=False)
    tokenizer = build_tokenizer(cfg.model, cfg.data.max_tokens)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer.vocab_size).eval()
    return cfg, splits, tokenizer, model


@pytest.fixture(scope="module")
def trained_run(synth, tmp_path_factory, tiny_overrides):
    from partsearch.train.engine import train

    cfg = load_config(None, [*tiny_overrides, *EVAL, f"data.root={synth[1].root}", "train.max_steps=1"])
    return train(cfg, tmp_path_factory.mktemp("eval_run") / "run")


def direct_embeddings(synth):
    """Embeddings computed straight from the model, one batch each, without the loaders."""
    from partsearch.data.images import load_image
    from partsearch.model.backbones import build_image_transform

    cfg, splits, tokenizer, model = synth
    transform = build_image_transform(cfg.model, cfg.data, train=False)
    images = torch.stack(
        [transform(load_image(splits.image_root / r.image, cfg.data.max_image_pixels)) for r in splits.test]
    )
    tokens = tokenizer([c for r in splits.test for c in r.captions])
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens.ids, tokens.mask)


@pytest.fixture(scope="module")
def evaluated(synth):
    """`evaluate_model` on the test split, beside embeddings computed directly and the ids."""
    cfg, splits, tokenizer, model = synth
    results = evaluate_model(model, tokenizer, cfg, splits.test, splits.image_root, "cpu", progress=False)
    image_emb, text_emb = direct_embeddings(synth)
    text_ids = [r.pid for r in splits.test for _ in r.captions]
    image_ids = [r.pid for r in splits.test]
    return results, image_emb, text_emb, text_ids, image_ids


def test_t2i_equals_metrics_of_the_model_similarity_with_configured_weights(evaluated):
    results, image_emb, text_emb, text_ids, image_ids = evaluated
    expected = retrieval_metrics(similarity(image_emb, text_emb, (1.0, 0.5, 2.0)), text_ids, image_ids)
    assert results["t2i"] == pytest.approx(expected, abs=1e-4)
    assert results["levels"]["all"] == results["t2i"]
    assert (results["queries"], results["gallery"]) == (len(text_ids), len(image_ids))


def test_level_rows_score_global_then_global_plus_coarse(evaluated):
    results, image_emb, text_emb, text_ids, image_ids = evaluated
    levels = level_similarities(image_emb, text_emb)
    expected_global = retrieval_metrics(levels["global"], text_ids, image_ids)
    expected_coarse = retrieval_metrics(levels["global"] + levels["coarse"], text_ids, image_ids)
    assert results["levels"]["global"] == pytest.approx(expected_global, abs=1e-4)
    assert results["levels"]["global+coarse"] == pytest.approx(expected_coarse, abs=1e-4)


def test_i2t_ranks_captions_for_each_image_by_identity(evaluated):
    results, image_emb, text_emb, text_ids, image_ids = evaluated
    expected = retrieval_metrics(similarity(image_emb, text_emb, (1.0, 0.5, 2.0)).T, image_ids, text_ids)
    assert results["i2t"] == pytest.approx(expected, abs=1e-4)


def test_evaluator_scores_the_requested_split_like_evaluate_model(synth):
    cfg, splits, tokenizer, model = synth
    expected = evaluate_model(model, tokenizer, cfg, splits.val, splits.image_root, "cpu", progress=False)
    model.train()
    assert Evaluator(cfg, splits, tokenizer)(model, "val") == expected
    assert model.training, "the evaluator must give the model back in the mode it found it"


def test_table_has_one_row_per_direction_and_level():
    row = {"R1": 1.0, "R5": 2.0, "R10": 3.0, "mAP": 4.0, "mINP": 5.0}
    table = format_table({"t2i": row, "i2t": row, "levels": {"global": row, "global+coarse": row, "all": row}})
    names = [line.split("  ")[0].strip() for line in table.splitlines()[1:]]
    assert names == ["t2i", "i2t", "t2i global", "t2i global+coarse", "t2i all"]
    assert table.splitlines()[0].split() == ["R1", "R5", "R10", "mAP", "mINP"]


def test_eval_command_prints_the_table_and_writes_json(trained_run, tmp_path, capsys):
    out = tmp_path / "results" / "eval.json"
    assert cli_main(["eval", str(trained_run), "--split", "val", "--json", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "t2i global+coarse" in printed and "mINP" in printed
    results = json.loads(out.read_text())
    assert set(results["t2i"]) == {"R1", "R5", "R10", "mAP", "mINP"}
    assert set(results["levels"]) == {"global", "global+coarse", "all"}
    assert results["split"] == "val" and results["checkpoint"].endswith("best.pt")
    assert all(0.0 <= v <= 100.0 for v in results["i2t"].values())
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]


def test_eval_of_checkpoint_with_mismatched_config_is_a_clear_error(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("dim: 32", "dim: 16"))
    assert cli_main(["eval", str(run), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "do not match this configuration" in error and "model.dim: 32 -> 16" in error


def test_eval_with_a_moved_dataset_suggests_data_root(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = run / "config.yaml"
    text = config.read_text()
    root = load_config(config).data.root
    config.write_text(text.replace(root, str(tmp_path / "gone")))
    assert cli_main(["eval", str(run), "--device", "cpu"]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert cli_main(["eval", str(run), "--device", "cpu", "--data-root", root]) == 0


def test_eval_json_into_a_folder_is_refused_before_any_work(tmp_path, capsys):
    assert cli_main(["eval", str(tmp_path / "no-run"), "--json", str(tmp_path) + "/", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "eval_test.json" in err


def test_eval_of_a_run_trained_with_a_relative_data_root_works_from_any_directory(synth, tmp_path, tiny_overrides,
                                                                                   monkeypatch, capsys):
    from partsearch.train.engine import train

    root = synth[1].root
    monkeypatch.chdir(root.parent)
    cfg = load_config(None, [*tiny_overrides, *EVAL, f"data.root={root.name}", "train.max_steps=1"])
    run = train(cfg, tmp_path / "runs" / "run")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["eval", str(run), "--split", "val", "--device", "cpu"]) == 0
    assert "queries" in capsys.readouterr().out


def test_the_all_levels_row_names_its_weights():
    row = {"R1": 1.0, "R5": 2.0, "R10": 3.0, "mAP": 4.0, "mINP": 5.0}
    table = format_table({"t2i": row, "i2t": row, "levels": {"global": row, "all": row}, "weights": [1.0, 0.5, 0.25]})
    assert "t2i all (1, 0.5, 0.25)" in table
