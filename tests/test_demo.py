"""`partsearch demo` end to end on a tiny configuration (the real one trains for minutes)."""

import json
import re

import pytest

from partsearch.cli import main

DEMO = ["model.freeze_text=none", "train.log_every=2"]  # synth_cpu freezes 5 MiniLM layers


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
