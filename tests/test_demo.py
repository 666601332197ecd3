"""`partsearch demo` end to end on a tiny configuration (the real one trains for minutes)."""

import json
import re

import pytest
import torch

from partsearch.cli import main

# synth_cpu freezes 5 MiniLM layers
DEMO = ["model.freeze_text=none", "train.log_every=2"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_overrides):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "demo"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["demo", "--out", str(out), "--ids", "8", "--minutes", "2", *tiny_overrides, *DEMO])
    return code, out, buffer.getvalue(), [*tiny_overrides, *DEMO]


@pytest.mark.slow
def test_demo_runs_every_step_and_ends_with_search_commands(demo_run):
    code, out, printed, _ = demo_run
    assert code == 0
    assert [int(n) for n in re.findall(r"== \[(\d)/7\]", printed)] == [1, 2, 3, 4, 5, 6, 7]
    assert "== [2/7] train synth_cpu.yaml (" in printed  # names the config it trains
    assert "image backbone, 2 torch threads, " in printed
    # the kernels decide the rounding as the threads do, so a reader comparing numbers sees them
    assert f"threads, {torch.backends.cpu.get_cpu_capability()} kernels)" in printed
    assert "t2i global+coarse" in printed
    assert f"partsearch search {out / 'index'}" in printed


@pytest.mark.slow
def test_demo_marks_each_of_the_top_5_as_hit_or_miss(demo_run):
    _, _, printed, _ = demo_run
    marks = re.findall(r"^\s+\d\. (HIT |miss)", printed, flags=re.M)
    assert len(marks) == 3 * 5


@pytest.mark.slow
def test_demo_report_embeds_results_heatmaps_and_curves(demo_run):
    _, out, _, _ = demo_run
    page = (out / "report.html").read_text()
    assert page.count('class="card ') == 3 * 5
    assert "foreground heatmap" in page and "shoulders heatmap" in page and "legs heatmap" in page  # 2 stripes
    assert page.count("<svg") == 2 and "no data" not in page


@pytest.mark.slow
def test_demo_report_says_which_kernels_and_threads_trained_the_model(demo_run):
    _, out, _, _ = demo_run
    page = (out / "report.html").read_text()
    assert "trained with" in page
    assert f"torch {torch.__version__}, 2 threads, {torch.backends.cpu.get_cpu_capability()} kernels" in page


def test_demo_report_says_how_many_people_train_and_how_many_test_people_are_unseen(demo_run):
    _, out, _, _ = demo_run
    page = (out / "report.html").read_text()
    assert "train 4 people" in page and "val 2, test 2 people never seen in training" in page  # --ids 8


def test_demo_report_shows_whether_the_parts_form(demo_run):
    _, out, _, _ = demo_run
    page = (out / "report.html").read_text()
    assert "Do the parts form?" in page and "What each shared token looks at" in page
    assert "token 1" in page and "token 2" in page  # the tiny model has 2 coarse tokens
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert {"coarse_token_cos", "fine_margin", "foreground_contrast"} <= set(metrics["parts"])


@pytest.mark.slow
def test_demo_rerun_reuses_data_run_and_index(demo_run, capsys):
    _, out, _, overrides = demo_run
    assert main(["demo", "--out", str(out), "--ids", "8", *overrides]) == 0
    printed = capsys.readouterr().out
    assert f"reusing {out / 'data'}" in printed and "reusing the trained run" in printed


def test_demo_refuses_to_delete_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path), "--fresh"]) == 2
    assert "was not made by `partsearch demo`" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").exists()


@pytest.fixture(scope="module")
def video_demo(demo_run, tmp_path_factory):
    """`partsearch demo --run RUN --video street.avi`: the tiny trained run reused on the small
    synthetic street video of the video tests (two people, 6.4 s)."""
    import contextlib
    import io

    from partsearch.video.synth import write_video

    _, first, _, _ = demo_run
    root = tmp_path_factory.mktemp("demo-video")
    video = write_video(root / "street.avi", num_frames=64, fps=10.0)
    out = root / "demo"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["demo", "--out", str(out), "--run", str(first / "run"), "--video", str(video.path),
                     "--video-query", "A man in a blue shirt.", "--video-query", "A woman in a red skirt."])
    return code, out, buffer.getvalue()


@pytest.mark.slow
def test_demo_with_a_run_and_a_video_skips_training_and_adds_the_video_step(video_demo):
    code, out, printed = video_demo
    assert code == 0
    assert [int(n) for n in re.findall(r"== \[(\d)/8\]", printed)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "train: skipped" in printed and not (out / "run").exists()
    assert f"partsearch search {out / 'video-index'}" in printed


@pytest.mark.slow
def test_demo_report_answers_each_video_sentence_with_tracks_their_crop_time_and_frame(video_demo):
    _, out, _ = video_demo
    page = (out / "report.html").read_text()
    assert "<h2>Searching street.avi</h2>" in page
    assert "&ldquo;A man in a blue shirt.&rdquo;" in page and "&ldquo;A woman in a red skirt.&rdquo;" in page
    tracks = [t.split('<div class="query">')[0] for t in page.split('<div class="track">')[1:]]
    assert len(tracks) >= 2  # up to 3 tracks per sentence
    for track in tracks:
        assert 'alt="best crop of track' in track and "data:image/jpeg;base64," in track
        assert "street.avi, track " in track and re.search(r"seen \d:\d\d\.\d&ndash;\d:\d\d\.\d", track)
        assert re.search(r'<img src="data:image/jpeg;base64,[^"]+" alt="frame \d+ of street.avi with the box', track)


@pytest.mark.slow
def test_demo_video_answers_come_from_the_ingested_gallerys_tracks(video_demo):
    import json as json_

    _, out, _ = video_demo
    tracks = {(r["video"], r["track"]) for r in map(json_.loads, (out / "video-gallery" / "records.jsonl").read_text().splitlines())}
    assert 1 <= len(tracks) <= 3  # two people; HOG may split one
    page = (out / "report.html").read_text()
    shown = {int(n) for n in re.findall(r"street.avi, track (\d+)", page)}
    assert shown and shown <= {t for _, t in tracks}


@pytest.mark.parametrize("argv, message", [
    (["--video", "no/such.avi"], "--video no/such.avi: no such file or folder"),
    (["--video-query", "a man"], "--video-query needs --video PATH"),
    (["--run", "RUN", "train.epochs=2"], "config overrides (train.epochs=2) apply only to training"),
    (["--config", "no/such.yaml"], "--config no/such.yaml: no such file"),
    (["--run", "RUN", "--config", "configs/synth_cpu_footage.yaml"],
     "--config configs/synth_cpu_footage.yaml applies only"),
    (["--threads", "0"], "--threads 0: must be 1 or more"),
])
def test_demo_refuses_video_and_run_options_that_cannot_work(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in argv]
    assert main(["demo", "--out", str(tmp_path / "demo"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_demo_run_without_a_checkpoint_names_the_folder(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["demo", "--out", str(tmp_path / "demo"), "--run", str(tmp_path / "run")]) == 2
    assert f"--run {tmp_path / 'run'}: no best.pt there" in capsys.readouterr().err


def test_demo_trains_the_config_it_is_given(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("train:\n  LR: 0.1\n")  # a key the loader refuses, naming the file it read
    assert main(["demo", "--out", str(tmp_path / "demo"), "--ids", "6", "--config", str(config)]) == 2
    assert f"{config}: unknown config key 'train.LR'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, threads", [([], 2), (["--threads", "3"], 3)])
def test_the_demo_trains_with_a_fixed_thread_count_not_the_machines_cores(tmp_path, monkeypatch, argv, threads):
    """Another thread count rounds differently and trains another model, so an 8-core machine
    must train with the same 2 threads as a 2-core one (a config error stops it after that)."""
    import os

    import torch

    calls = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    config = tmp_path / "mine.yaml"
    config.write_text("train:\n  LR: 0.1\n")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--ids", "6", "--config", str(config), *argv]) == 2
    assert calls == [threads]


def test_a_run_cut_by_the_time_limit_is_named_and_a_full_one_is_not(tmp_path):
    import json

    from partsearch.demo import cut_short

    (tmp_path / "schedule.json").write_text(json.dumps({"step": 195, "planned_steps": 710}))
    assert cut_short(tmp_path).startswith("training stopped at step 195 of 710")
    (tmp_path / "schedule.json").write_text(json.dumps({"step": 710, "planned_steps": 710}))
    assert cut_short(tmp_path) is None


def test_the_report_shows_a_warning_in_red_above_the_summary():
    from partsearch.report import Report, render_report

    page = render_report(Report(title="t", summary=[("a", "b")], metrics={}, curves={}, warning="stopped at step 3"))
    assert page.index('color:#c00') < page.index('class="summary"') and "stopped at step 3" in page


def test_the_demo_config_comes_from_the_package_so_it_runs_outside_a_checkout():
    from pathlib import Path

    import partsearch
    from partsearch.demo import config_path

    path = config_path()
    assert path.is_file() and Path(partsearch.__file__).parent in path.resolve().parents


@pytest.mark.slow
def test_demo_reuses_a_run_whose_data_root_is_relative_to_it(tmp_path, tiny_overrides, monkeypatch, capsys):
    """`make demo`'s own run stores its data as `../data`: `partsearch demo --run runs/demo/run`
    must find it from the run directory, not from the folder it is typed in."""
    import yaml

    from partsearch.config import load_config
    from partsearch.data.synth import generate

    generate(tmp_path / "data", num_ids=12, seed=0, size=(64, 32))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(load_config(None, list(tiny_overrides)).to_dict()))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(config), "--data-root", "data", "--out", "runs/a", "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert main(["demo", "--run", "runs/a", "--out", "again"]) == 0
    printed = capsys.readouterr().out
    assert "reusing data, the data of runs/a" in printed
    assert (tmp_path / "again" / "report.html").is_file()


@pytest.mark.parametrize("argv, ids, held_out", [([], 720, 200), (["--ids", "8"], 8, None),
                                                  (["--ids", "8", "--held-out", "3"], 8, 3)])
def test_the_demo_holds_out_200_val_and_200_test_people_by_default(tmp_path, monkeypatch, argv, ids, held_out):
    """40 val people chose level weights by noise (docs/BENCHMARKS.md section 12): the demo's
    default data holds out 200 each; another --ids keeps SynthPEDES's 10% unless --held-out says."""
    from partsearch.data import synth
    from partsearch.errors import UserError

    calls = []

    def generate(out_dir, **kwargs):
        calls.append(kwargs)
        raise UserError("stop here")

    monkeypatch.setattr(synth, "generate", generate)
    assert main(["demo", "--out", str(tmp_path / "demo"), *argv]) == 2
    assert (calls[0]["num_ids"], calls[0]["held_out"]) == (ids, held_out)


def test_a_split_that_cannot_be_drawn_is_refused_before_the_demo_folder_is_made(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--ids", "10", "--held-out", "5"]) == 2
    assert "--held-out 5 with --ids 10" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
