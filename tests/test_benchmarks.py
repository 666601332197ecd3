"""Smoke tests of the benchmarks: argument parsing, and a tiny run of each that writes its JSON."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `benchmarks` is a top-level folder, not part of the installed package

from benchmarks import __main__ as entry
from benchmarks import common, gpu_bench, search  # noqa: E402

# A synth_cpu model small enough for a CPU smoke test (random weights, no MiniLM files needed).
TINY = ["--override", "model.text_weights=random", "--override", "model.text_width=32",
        "--override", "model.text_layers=1", "--override", "model.freeze_text=none",
        "--override", "model.image_width=16", "--override", "model.dim=32",
        "--override", "data.image_size=[64,32]", "--override", "data.max_tokens=8"]


def _tiny_run(tmp_path, tiny_overrides) -> Path:
    """A SynthPEDES of 8 people in tmp_path/synth (returned) and a 1-step run on it in tmp_path/run."""
    import yaml

    from partsearch.cli import main
    from partsearch.config import load_config
    from partsearch.data.synth import generate

    root = generate(tmp_path / "synth", num_ids=8, seed=0, size=(64, 32))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(load_config(None, [*tiny_overrides, f"data.root={root}"]).to_dict()))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--max-steps", "1"]) == 0
    return root


def read(path):
    return json.loads(Path(path).read_text())


def test_entry_point_lists_every_benchmark_including_the_other_owners(capsys):
    assert entry.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("synth", "metrics", "heads", "ablation", "train-step", "encode", "search", "ingest", "tracks", "vtest",
                 "fusion", "gpu", "all"):
        assert f"  {name} " in out


def test_unknown_benchmark_is_a_usage_error(capsys):
    assert entry.main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_a_missing_benchmark_module_fails_only_when_asked_for(monkeypatch):
    monkeypatch.setitem(entry.BENCHMARKS, "ghost", ("benchmarks.no_such_module", "missing"))
    with pytest.raises(SystemExit, match="benchmark 'ghost' is not available"):
        entry.main(["ghost"])


def test_search_sizes_accept_k_and_m_suffixes():
    assert search.parse_sizes("10k,100k,1m,500") == [10_000, 100_000, 1_000_000, 500]


def test_recall_counts_the_overlap_of_top_k_sets():
    found = np.array([[1, 2, 3], [4, 5, 6]])
    exact = np.array([[3, 2, 1], [4, 9, 8]])
    assert search.recall_at(found, exact, 3) == pytest.approx((3 + 1) / 6)


def test_search_tiny_run_exact_rows_agree_with_the_float32_ground_truth(tmp_path):
    out = tmp_path / "search.json"
    code = search.main(["--data", "random", "--sizes", "400", "--dim", "8", "--queries", "6", "--nprobe", "4",
                        "--factor", "10", "--factory", "PCA16,IVF4,SQ8", "--json", str(out)])
    assert code == 0
    result = read(out)
    assert result["machine"]["cores"] >= 1 and result["machine"]["date"]
    rows = {r["backend"]: r for r in result["rows"]}
    # The ground truth is float32, the served vectors float16: the exact backend must still agree.
    assert rows["exact"]["recall@10"] == 1.0 and 0 < rows["exact"]["anon_mib"] <= rows["exact"]["rss_mib"]
    assert "Flat" in rows["auto"]["params"]  # 400 images: auto searches exactly
    assert 0.0 <= rows["PCA16,IVF4,SQ8"]["recall@10"] <= 1.0 and "nprobe" not in rows["PCA16,IVF4,SQ8"]["params"]
    assert all(r["p50_ms"] <= r["p95_ms"] for r in result["rows"])


def test_search_filtered_tiny_run_finds_the_exact_filtered_top_10(tmp_path):
    out = tmp_path / "filtered.json"
    code = search.main(["--data", "random", "--sizes", "3000", "--dim", "8", "--queries", "5",
                        "--filter-keep", "0.01,0.5", "--json", str(out)])
    assert code == 0
    rows = read(out)["rows"]
    assert [(r["keep"], r["allowed"]) for r in rows] == [(0.01, 30), (0.5, 1500)]
    assert all(r["recall@10"] == 1.0 and r["path"].startswith("Flat: exact") for r in rows)  # auto is exact here


def test_calibrated_gallery_keeps_the_measured_images_and_adds_identities_like_them(tmp_path):
    from benchmarks import gallery_vectors

    rng = np.random.default_rng(0)
    dim, levels = 4, 3
    centroids = gallery_vectors.blocks_normalised(rng.standard_normal((5, dim * levels)).astype(np.float32), dim)
    identity = np.repeat(np.arange(5), 3)
    measured = gallery_vectors.blocks_normalised(centroids[identity] + 0.1 * rng.standard_normal((15, dim * levels)), dim)
    np.save(tmp_path / "folded.f16.npy", measured.astype(np.float16))
    np.save(tmp_path / "identity.npy", identity)
    (tmp_path / "meta.json").write_text(json.dumps({"dim": dim}))
    ids = gallery_vectors.calibrated_gallery(tmp_path, 40, tmp_path / "g.npy")
    gallery = np.load(tmp_path / "g.npy").astype(np.float32)
    np.testing.assert_array_equal(gallery[:15], measured.astype(np.float16).astype(np.float32))
    assert ids[:15].tolist() == identity.tolist() and ids[15:].min() >= 5 and len(ids) == 40
    np.testing.assert_allclose(np.linalg.norm(gallery.reshape(40, levels, dim), axis=-1), 1.0, atol=2e-3)
    # New images lie near the measured ones (within-identity spread), not anywhere on the sphere.
    nearest = (gallery[15:] @ measured.T).max(axis=1) / levels
    assert nearest.min() > 0.5


def test_synth_tiny_run_reports_identities_per_second(tmp_path):
    from benchmarks import synth

    out = tmp_path / "synth.json"
    assert synth.main(["--ids", "6", "--repeats", "1", "--json", str(out)]) == 0
    measured, extrapolated = read(out)["rows"]
    assert measured["ids"] == 6 and measured["images"] > 0 and measured["ids_s"] > 0
    assert extrapolated["seconds"] == pytest.approx(1000 / measured["ids_s"])


def test_ingest_tiny_run_reports_frames_per_second(tmp_path):
    from benchmarks import ingest

    out = tmp_path / "ingest.json"
    assert ingest.main(["--size", "240x320", "--frames", "8", "--repeats", "1", "--threads", "1",
                        "--json", str(out)]) == 0
    row = read(out)["rows"][0]
    assert row["sampled"] == 4 and row["frames_s"] > 0 and row["detector"] == "hog"


def test_ingest_compares_worker_counts_row_by_row_with_a_ratio_to_the_first(tmp_path):
    from benchmarks import ingest

    out = tmp_path / "ingest.json"
    assert ingest.main(["--size", "240x320", "--frames", "8", "--repeats", "1", "--threads", "2",
                        "--workers", "1", "2", "--json", str(out)]) == 0
    rows = read(out)["rows"]
    assert [r["workers"] for r in rows] == [1, 2] and rows[0]["speedup_vs_first"] == 1.0
    assert rows[0]["crops"] == rows[1]["crops"] and rows[1]["speedup_vs_first"] > 0


def test_train_step_tiny_run_counts_flops_and_memory(tmp_path):
    from benchmarks import train_step

    out = tmp_path / "train.json"
    assert train_step.main(["--batch", "4", "--repeats", "1", "--json", str(out), *TINY]) == 0
    (row,) = read(out)["rows"]
    assert row["setting"] == "synth_cpu" and row["device"] == "cpu" and row["batch"] == 4
    assert row["images_s"] > 0 and row["gflops_per_image"] > 0 and row["peak_mem_gib"] > 0
    assert row["mfu_pct"] is None  # no measured GPU ceiling on a CPU
    assert row["finite_loss"] and row["compile"] == "off"


def test_train_step_times_the_trainer_s_own_step_with_the_config_s_switches():
    from benchmarks import train_step
    from partsearch.train.step import Stepper

    overrides = [v for v in TINY if v != "--override"] + ["train.fused_optimizer=true", "train.channels_last=true"]
    cfg, model, stepper, batch = train_step.build("synth_cpu", common.torch.device("cpu"), overrides)
    assert isinstance(stepper, Stepper) and stepper.channels_last
    assert stepper.optimizer.defaults["fused"] and stepper.optimizer is stepper.scheduler.optimizer
    assert cfg.train.lr == 1e-3 and cfg.loss.infonce == 1.0  # configs/synth_cpu.yaml, not a rewrite of it


@pytest.mark.parametrize("name", sorted(common.SETTINGS))
def test_every_setting_is_a_shipped_config_with_only_the_weights_changed(name):
    from partsearch.config import load_config

    spec = common.SETTINGS[name]
    assert spec["config"].parent.name == "configs" and spec["config"].is_file()
    shipped, benchmarked = load_config(spec["config"]).to_dict(), common.setting_config(name).to_dict()
    shipped["model"].update(image_weights="random", text_weights="random")
    benchmarked["model"].update(image_weights="random", text_weights="random")
    assert benchmarked == shipped


def test_train_step_rejects_an_unknown_setting():
    from benchmarks import train_step

    with pytest.raises(SystemExit) as err:
        train_step.main(["--settings", "r18+gpt"])
    assert err.value.code == 2


def test_encode_tiny_run_reports_images_and_queries_per_second(tmp_path):
    from benchmarks import encode

    out = tmp_path / "encode.json"
    assert encode.main(["--image-batch", "4", "--text-batch", "4", "--repeats", "1", "--json", str(out), *TINY]) == 0
    (row,) = read(out)["rows"]
    assert row["gallery_images_s"] > 0 and row["queries_s"] > 0


@pytest.mark.skipif(common.torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_suite_without_a_gpu_checks_every_part_on_the_cpu(tmp_path, capsys):
    code = gpu_bench.main(["--settings", "synth_cpu", "--out", str(tmp_path), *TINY])
    assert "no GPU is present" in capsys.readouterr().out
    result = read(tmp_path / "gpu.json")
    assert code == 0 and result["errors"] == {}
    assert [r["part"] for r in result["rows"]] == ["train-step", "encode", "encode", "metrics"]
    assert "CPU check" in (tmp_path / "gpu_table.md").read_text()


def test_gpu_suite_part_failure_is_recorded_and_later_parts_still_run():
    rows, errors, saved = [], {}, []

    def broken():
        raise RuntimeError("out of memory")

    gpu_bench._run_part("first", rows, errors, broken, 30, lambda: saved.append(len(rows)))
    gpu_bench._run_part("second", rows, errors, lambda: [{"part": "second", "value": 1.0}], 30)
    assert "RuntimeError: out of memory" in errors["first"]
    assert rows[0]["note"].startswith("failed: RuntimeError") and rows[1] == {"part": "second", "value": 1.0}
    assert saved == [1]


def test_gpu_suite_part_over_its_time_limit_is_stopped():
    rows, errors = [], {}
    start = time.monotonic()
    gpu_bench._run_part("slow", rows, errors, lambda: time.sleep(5) or [], 1)
    assert time.monotonic() - start < 4
    assert "PartTimeout" in errors["slow"]


def test_gpu_script_is_valid_bash():
    for script in ("gpu.sh", "vendor.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)


def test_table_is_markdown_with_one_row_per_result():
    text = common.table([{"a": 1, "b": 2.5}, {"a": 1000, "b": None}])
    lines = text.splitlines()
    assert lines[0].split("|")[1].strip() == "a" and len(lines) == 4
    assert "1,000" in lines[3] and "-" in lines[3]


def test_table_writes_booleans_as_yes_and_no():
    assert common.fmt(True) == "yes" and common.fmt(False) == "no" and common.fmt(1) == "1"


def test_json_is_written_atomically(tmp_path):
    path = tmp_path / "sub" / "r.json"
    common.write_json(path, {"x": 1})
    assert read(path) == {"x": 1} and not list(path.parent.glob("*.tmp"))


def test_cli_runs_as_a_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "train-step" in result.stdout


def test_store_int8_quantization_keeps_each_component_within_half_a_step_of_its_vector_scale():
    from benchmarks import store

    folded = np.random.default_rng(0).standard_normal((5, 40)).astype(np.float32)
    step = np.abs(folded).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(store.quantize_int8(folded) - folded) <= step / 2 + 1e-7)
    assert store.top_overlap(folded, folded, k=10) == 1.0


def test_vtest_set_is_10_people_with_4_crops_and_the_same_2_captions_on_each(tmp_path):
    from benchmarks import vtest

    from partsearch.data.formats import load_dataset

    splits = load_dataset("CUHK-PEDES", vtest.DATA, verbose=False)
    assert not splits.train and not splits.val
    by_pid = {}
    for record in splits.test:
        by_pid.setdefault(record.pid, []).append(record)
        assert (splits.image_root / record.image).is_file()
    assert sorted(by_pid) == list(range(1, 11))
    assert all(len(rs) == 4 and len(rs[0].captions) == 2 and all(r.captions == rs[0].captions for r in rs)
               for rs in by_pid.values())
    assert sum(p.stat().st_size for p in vtest.DATA.rglob("*") if p.is_file()) < 2 * 2**20


def test_vtest_asks_each_caption_once_and_keeps_every_crop_in_the_gallery():
    from benchmarks import vtest

    from partsearch.data.formats import load_dataset

    records = vtest.once_per_person(load_dataset("CUHK-PEDES", vtest.DATA, verbose=False).test)
    assert len(records) == 40 and sum(len(r.captions) for r in records) == 20


def test_vtest_tiny_run_reports_recall_on_20_queries_and_40_crops(tmp_path, tiny_overrides):
    from benchmarks import vtest

    _tiny_run(tmp_path, tiny_overrides)
    out = tmp_path / "vtest.json"
    assert vtest.main(["--run", str(tmp_path / "run"), "--json", str(out)]) == 0
    result = read(out)
    assert (result["queries"], result["gallery"], result["people"]) == (20, 40, 10)
    assert {row["similarity"] for row in result["rows"]} == {"global", "global+coarse", "all"}
    assert 0 <= result["t2i"]["R1"] <= result["t2i"]["R5"] <= 100
    ranks = [rank for pair in result["person_ranks"].values() for rank in pair]
    assert set(result["person_ranks"]) == {str(pid) for pid in range(1, 11)} and len(ranks) == 20
    assert 100 * sum(rank == 1 for rank in ranks) / 20 == pytest.approx(result["t2i"]["R1"])


def test_fusion_gives_each_grid_rule_r1_on_val_test_and_real_people_and_marks_the_chosen(tmp_path, tiny_overrides):
    from benchmarks import fusion, vtest
    from partsearch.eval.fusion import GRID
    from partsearch.runs import read_level_weights

    _tiny_run(tmp_path, tiny_overrides)
    assert fusion.main(["--run", str(tmp_path / "run"), "--json", str(tmp_path / "fusion.json")]) == 0
    rows = read(tmp_path / "fusion.json")["rows"]
    assert len(rows) == len(GRID) ** 2
    chosen = [r for r in rows if "chosen" in r["rule"]]
    assert [(1.0, r["w_c"], r["w_f"]) for r in chosen] == [read_level_weights(tmp_path / "run")]
    assert vtest.main(["--run", str(tmp_path / "run"), "--json", str(tmp_path / "vtest.json")]) == 0
    by_level = {r["similarity"]: r["R1"] for r in read(tmp_path / "vtest.json")["rows"]}
    [global_only] = [r for r in rows if r["rule"].startswith("global")]
    assert global_only["real people R1"] == pytest.approx(by_level["global"])


def test_vtest_person_rank_places_each_person_by_its_best_crop():
    from benchmarks import vtest

    # gallery: person 7 (two crops), person 3, person 5; two queries, of person 7 and of person 5
    similarity = torch.tensor([[0.1, 0.9, 0.5, 0.2],
                               [0.8, 0.1, 0.9, 0.3]])
    image_ids, text_ids = torch.tensor([7, 7, 3, 5]), torch.tensor([7, 5])
    assert vtest.person_ranks(similarity, text_ids, image_ids) == [1, 3]


def test_image_query_and_sightings_tiny_runs_report_their_rows(tmp_path, tiny_overrides):
    from benchmarks import image_query, sightings

    root = _tiny_run(tmp_path, tiny_overrides)
    out = tmp_path / "image_query.json"
    assert image_query.main(["--run", str(tmp_path / "run"), "--data", str(root), "--json", str(out)]) == 0
    rows = read(out)["rows"]
    assert [r["query"] for r in rows][:2] == ["t2i (first caption)", "i2i"] and len(rows) == 5
    assert all(0 <= r["R1"] <= r["R5"] <= 100 for r in rows)
    out = tmp_path / "sightings.json"
    assert sightings.main(["--run", str(tmp_path / "run"), "--frames", "30", "--workdir", str(tmp_path / "s"),
                           "--json", str(out)]) == 0
    rows = read(out)["rows"]
    assert rows and all(0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 for r in rows)


def test_explain_check_changes_a_jeans_wearers_lower_colour_only_to_another_denim():
    import numpy as np

    from benchmarks.explain_check import _other_colour
    from partsearch.data.synth import DENIM

    person = {"lower_type": "jeans", "lower_color": "blue"}
    rng = np.random.default_rng(0)
    colours = {_other_colour(person, "lower_color", rng) for _ in range(50)}
    assert colours <= set(DENIM) - {"blue"} and len(colours) > 1


class _Counting:
    """A detector that finds `n` boxes in the n-th frame it is given."""

    name, default_min_score, config = "counting", 0.5, {"k": 1}

    def __init__(self):
        self.calls = 0

    def __call__(self, image):
        from partsearch.video.detect import PersonBox

        self.calls += 1
        return [PersonBox(i, 0, i + 10, 40, 1.0) for i in range(self.calls * 10)]


def test_recorded_boxes_keep_one_list_per_frame_when_a_setting_starts_again_from_frame_0():
    from benchmarks.tracks import RecordedBoxes

    recorded = RecordedBoxes(_Counting())
    recorded(None), recorded(None)
    recorded.calls = 0  # the next setting replays the video
    recorded(None)
    assert [len(b) for b in recorded.boxes] == [30, 20]
    assert (recorded.name, recorded.default_min_score, recorded.config) == ("counting", 0.5, {"k": 1})


def test_dropped_boxes_drop_about_the_share_asked_and_the_same_ones_for_a_seed():
    from benchmarks.tracks import DroppedBoxes, RecordedBoxes

    recorded = RecordedBoxes(_Counting())
    for _ in range(20):
        recorded(None)
    total = sum(len(b) for b in recorded.boxes)
    replays = [DroppedBoxes(recorded, 0.1, seed) for seed in (0, 0, 1)]
    runs = [[replay(None) for _ in range(20)] for replay in replays]
    kept = [sum(len(b) for b in run) for run in runs]
    assert 0.85 * total < kept[0] < 0.95 * total
    assert runs[0] == runs[1] and runs[0] != runs[2]
    whole = DroppedBoxes(recorded, 0.0, 0)
    assert sum(len(whole(None)) for _ in range(20)) == total


def test_step_profile_gives_the_before_variant_torch_s_own_dropout_for_its_step_only():
    from benchmarks.step_profile import Variant
    from partsearch.model import encoders

    seen = []
    before = Variant.__new__(Variant)
    before.word_dropout = False
    before._step = lambda record: seen.append(encoders.CPU_WORD_DROPOUT)
    before.step()
    assert seen == [False] and encoders.CPU_WORD_DROPOUT is True


def test_step_profile_s_before_variant_is_the_demo_config_as_issue_25_found_it():
    from benchmarks.step_profile import BEFORE
    from partsearch.config import load_config

    shipped = load_config(Path(__file__).resolve().parent.parent / "configs" / "synth_cpu.yaml")
    before = load_config(Path(__file__).resolve().parent.parent / "configs" / "synth_cpu.yaml", BEFORE)
    assert before.train.cache_frozen_text is False and before.model.attention_dropout == 0.1
    assert shipped.train.cache_frozen_text is True and shipped.model.attention_dropout == 0.0
