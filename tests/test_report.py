import io
import shutil

import pytest
from PIL import Image

from partsearch.report import (
    QueryExample, Report, ResultItem, TokenMaps, data_url, render_report, svg_line_plot, write_report,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _png(color) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 16), color).save(buf, format="PNG")
    return data_url(buf.getvalue())


def _report() -> Report:
    metrics = {"t2i": {"R1": 51.0, "R5": 80.0, "R10": 90.0, "mAP": 45.0, "mINP": 20.0},
               "i2t": {"R1": 60.0, "R5": 85.0, "R10": 92.0, "mAP": 40.0, "mINP": 15.0},
               "levels": {"global": {"R1": 40.0, "R5": 70.0, "R10": 80.0, "mAP": 35.0, "mINP": 10.0}},
               "queries": 12, "gallery": 6}
    item = ResultItem(rank=1, score=0.87, name="0001/a.png", hit=True, image_url=_png("red"),
                      heatmaps=[("fg", _png("blue")), ("part 1", _png("green"))],
                      part_scores=[("part 1", 0.7), ("part 2", -0.1)])
    miss = ResultItem(rank=2, score=0.5, name="0002/b.png", hit=False, image_url=_png("gray"))
    return Report(title="demo <report>", summary=[("dataset", "SynthPEDES")], metrics=metrics,
                  curves={"train loss": [(0, 3.0), (10, 2.0), (20, 1.5)], "val R@1": [(1, 10.0), (2, 30.0)]},
                  queries=[QueryExample(text="a man in a red shirt", target="7", results=[item, miss])])


def test_report_embeds_everything_and_escapes_text():
    page = render_report(_report())
    assert "demo &lt;report&gt;" in page
    assert page.count("data:image/png;base64,") == 4
    assert page.count("<svg") == 2
    assert "http://" not in page and "https://" not in page
    assert "&#10003; hit" in page and "&#10007; miss" in page


PARTS = {
    "images": 6, "captions": 12, "stripes": ["head", "legs"],
    "diversity": {"coarse_image": 0.3, "coarse_text": 0.5, "fine_text": 0.9, "fine_image": 0.4},
    "correspondence": {"coarse": {"margin": 0.2, "matrix": [[0.5, 0.1], [0.1, 0.5]]},
                       "fine": {"margin": 0.01, "matrix": [[0.30, 0.29], [0.28, 0.30]]}},
    "foreground_contrast": 2.5,
    "attributes": {"fine": {"image_image": {"hair_color": [0.85, 0.55], "shoe_color": [0.5, 0.9]}}},
    "token_regions": {"regions": ["background", "head"], "attention": [[0.2, 0.8], [0.9, 0.1]], "area": [0.9, 0.1]},
}


def test_report_shows_the_part_figures_against_their_targets():
    report = _report()
    report.parts = PARTS
    report.token_maps = TokenMaps(image_url=_png("white"), name="a.jpg", maps=[("token 1: head", _png("red"))])
    page = render_report(report)
    assert "Do the parts form?" in page and "token 1: head" in page
    assert '<td class="ok">2.500</td>' in page  # foreground contrast meets its target
    assert '<td class="bad">0.010</td>' in page  # the fine margin does not
    assert "Best stripes run head to feet: <b>no</b>" in page  # two of the four attributes only


def test_report_flags_a_token_that_favours_the_background():
    report = _report()
    regions = {"regions": ["background", "head"], "attention": [[0.2, 0.8], [0.95, 0.05]], "area": [0.5, 0.5]}
    report.parts = {**PARTS, "token_regions": regions}
    page = render_report(report)
    assert '<td class="bad">1.900</td>' in page  # token 2 reads the background at 1.9 times its area


def test_report_flags_a_foreground_map_brightest_on_the_floor_too_often():
    report = _report()
    report.parts = {**PARTS, "floor_peaks": 0.25}
    page = render_report(report)
    assert "brightest cell holds none of the person" in page
    assert '<td class="bad">0.250</td>' in page  # 1 image in 4 is brightest on the floor


def test_report_explains_scores_metrics_chance_and_a_missed_target():
    report = _report()
    report.chance_r1 = 2.5
    report.queries[0].first_hit_rank = 7
    page = render_report(report)
    assert "[-3, 3]" in page and "R1 = 2.50%" in page and "mINP" in page and "ranked 7" in page


def test_part_bars_are_proportional_on_a_fixed_track():
    page = render_report(_report())
    assert 'class="pos" style="left:50.0%;width:35.0%"' in page  # +0.70
    assert 'class="neg" style="left:45.0%;width:5.0%"' in page  # -0.10


def test_plot_without_points_says_so():
    assert "no data" in svg_line_plot([], "val R@1", "epoch")


def test_write_report_leaves_no_temporary_file(tmp_path):
    path = write_report(_report(), tmp_path / "report.html")
    assert path.read_text().startswith("<!doctype html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable installed (apt-get install chromium)")
def test_report_renders_offline_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    path = write_report(_report(), tmp_path / "report.html")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"])
        try:
            context = browser.new_context(offline=True)
            page = context.new_page()
            page.goto(path.as_uri())
            loaded = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
            assert loaded and all(loaded)
            assert page.locator("svg.plot path.line").count() == 2
            assert page.locator("table.metrics tr").count() == 4
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 0


def _video_answer(**changes):
    from partsearch.report import VideoAnswer

    values = dict(rank=1, score=1.25, video="cam<1>.avi", track=3, crops=12, start=4.8, end=83.4, time=6.0,
                  frame=60, box=(10, 20, 42, 84), crop_url=_png("red"), frame_url=_png("blue"), best_score=1.3)
    return VideoAnswer(**{**values, **changes})


def test_report_shows_each_video_answer_with_its_crop_time_span_video_and_frame():
    from partsearch.report import VideoQuery, VideoSection

    report = _report()
    report.video = VideoSection(videos=["cam<1>.avi"], summary="1 video(s), 40 crops of 3 tracks",
                                queries=[VideoQuery("a man in red", [_video_answer()], "mean-top3")])
    page = render_report(report)
    assert "<h2>Searching cam&lt;1&gt;.avi</h2>" in page and "&ldquo;a man in red&rdquo;" in page
    assert "cam&lt;1&gt;.avi, track 3" in page and "seen 0:04.8&ndash;1:23.4" in page and "12 crops" in page
    assert 'alt="best crop of track 3"' in page and 'alt="frame 60 of cam&lt;1&gt;.avi with the box of track 3"' in page
    assert "frame 60 at 0:06.0, box (10, 20)&ndash;(42, 84)" in page and "the mean of the three best" in page


def test_report_says_when_no_video_track_is_a_good_match_or_a_frame_cannot_be_read():
    from partsearch.report import VideoQuery, VideoSection

    report = _report()
    weak = VideoQuery("a red coat", [_video_answer(best_score=0.9, frame_url=None)], "max", match_threshold=1.1)
    good = VideoQuery("a blue coat", [_video_answer(best_score=1.2)], "max", match_threshold=1.1)
    report.video = VideoSection(videos=["cam.avi"], summary="s", queries=[weak, good])
    page = render_report(report)
    assert page.count("No track is a good match") == 1 and "scores 0.900, below 1.100" in page
    assert "frame 60 at 0:06.0: the video cannot be read there" in page


def test_a_results_part_bars_show_its_score_relative_to_the_gallery():
    item = ResultItem(rank=1, score=0.87, name="0001/a.png", hit=True, image_url=_png("red"),
                      relative_parts=[("torso", 2.4), ("feet", -1.2)])
    page = render_report(Report(title="t", summary=[], metrics={}, curves={}, queries=[
        QueryExample(text="a red tee", target="1", results=[item])]))
    assert "+2.4 sd" in page and "-1.2 sd" in page and "typical standard deviation" in page


def test_a_video_answer_of_a_person_who_came_back_shows_each_visit():
    from partsearch.report import VideoQuery, VideoSection

    report = _report()
    answer = _video_answer(start=4.8, end=83.4, visits=[(4.8, 20.0), (61.2, 83.4)])
    report.video = VideoSection(videos=["cam.avi"], summary="s", queries=[VideoQuery("a man in red", [answer], "max")])
    assert "seen 0:04.8&ndash;0:20.0, 1:01.2&ndash;1:23.4" in render_report(report)


def test_the_examples_say_the_score_is_weighted_by_the_level_weights_and_its_range():
    report = _report()
    report.level_weights = (1.0, 0.5, 2.0)
    page = render_report(report)
    assert "1 x the global cosine + 0.5 x the mean over coarse tokens + 2 x the mean over fine parts" in page
    assert "[-3.5, 3.5]" in page and "[-3, 3]" not in page


def test_a_weak_video_answer_says_the_threshold_stands_out_from_the_footage_not_the_validation_split():
    from partsearch.report import VideoQuery, VideoSection

    report = _report()
    weak = VideoQuery("a red coat", [_video_answer(best_score=0.9)], "max", match_threshold=1.1, match_rule="gallery")
    report.video = VideoSection(videos=["cam.avi"], summary="s", queries=[weak])
    page = render_report(report)
    assert "stands out from this gallery" in page and "validation split" not in page.split("Searching")[1]
