"""The investigation in a real headless Chromium: a text query, a hit, "more like this", a camera
filter, "find this person everywhere", two sightings confirmed into a case, and its export."""

import contextlib
import io
import json
import re
import shutil
import zipfile

import pytest
from search_fakes import camera_gallery, write_video_for
from test_search_browser import ARGS, CHROMIUM, pytestmark  # noqa: F401  (the same skip and marks)

from partsearch.search.cases import CaseStore
from partsearch.search.index import build_index
from partsearch.search.searcher import Searcher

KEY = "k" * 16


@contextlib.contextmanager
def page_at(server: str, **options):
    """The page of `server` in headless Chromium, loaded (its tracks switch shown)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, **options)
            page.goto(server + "/")
            page.wait_for_selector("#tracks-toggle:not([hidden])")
            yield page
        finally:
            browser.close()
TRACKS = {
    ("cam1.avi", 1): [("red", "blue")] * 3,
    ("cam1.avi", 2): [("green", "black")] * 3,
    ("cam2.avi", 1): [("red", "blue")] * 2,
    ("cam2.avi", 2): [("red", "black")] * 2,
    ("cam2.avi", 3): [("white", "green")] * 2,
    ("cam3.avi", 1): [("red", "blue")] * 2,
}
CAMERAS = {"cam1.avi": ("door", "2026-01-31T08:00:00+00:00"), "cam2.avi": ("yard", "2026-01-31T08:10:00+00:00"),
           "cam3.avi": ("gate", "2026-01-31T08:20:00+00:00")}


@pytest.fixture
def case_server(tmp_path, encoder):
    import threading
    import time

    import uvicorn
    from test_search_browser import _free_port

    from partsearch.search.service import create_app

    gallery = tmp_path / "gallery"
    records = camera_gallery(gallery, TRACKS, CAMERAS)
    for video in ("cam1.avi", "cam2.avi", "cam3.avi"):
        write_video_for(gallery, video)
    build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=records)
    port = _free_port()
    app = create_app(Searcher(tmp_path / "index", encoder=encoder), api_key=KEY)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        assert thread.is_alive()
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", tmp_path / "index"
    srv.should_exit = True
    thread.join(timeout=10)


def test_text_hit_more_like_this_camera_filter_sightings_case_and_export(case_server, tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    server, index = case_server
    shots = tmp_path / "shots"
    shots.mkdir()
    with page_at(server, accept_downloads=True) as page:
        page.uncheck("#tracks")
        page.fill("#query", "red blue")
        page.fill("#top-k", "6")
        page.click("#search-button")
        page.wait_for_selector("#results .card")
        first = page.locator("#results .card").first
        assert re.search(r"(door|yard|gate) · 0:0\d\.\d · 08:\d\d:\d\d", first.inner_text())  # where and when

        first.click()  # open a hit
        page.wait_for_selector("#detail:not([hidden]) #maps figure")
        assert "camera " in page.inner_text("#detail-where")
        page.screenshot(path=str(shots / "1-hit.png"))

        page.click("#more-like")  # more like this
        page.wait_for_function("document.getElementById('status').textContent.includes('images like')")
        assert page.is_visible("#like-chip")

        page.fill("#f-camera", "yard")  # filter to one camera
        page.click("#search-button")
        page.wait_for_function("document.getElementById('status').textContent.includes('filters: camera yard')")
        cards = page.locator("#results .card")
        assert cards.count() >= 5 and all("yard" in t for t in cards.all_inner_texts())  # 6 in yard, less the liked
        page.screenshot(path=str(shots / "2-more-like-yard.png"))

        cards.first.click()  # find this person everywhere
        page.wait_for_selector("#detail:not([hidden]) #everywhere:not([hidden])")
        page.click("#everywhere")
        page.wait_for_selector("#sightings:not([hidden]) .camera-row")
        assert set(page.locator(".camera-row h3").all_inner_texts()) == {"camera door", "camera yard", "camera gate"}
        page.screenshot(path=str(shots / "3-sightings.png"))

        page.fill("#api-key", KEY)  # confirm two sightings into the case
        for _ in range(2):
            before = page.locator(".card.confirmed").count()
            page.locator(".card.found .decide .yes").first.click()
            page.wait_for_function(f"document.querySelectorAll('.card.confirmed').length > {before}")
        assert "2 confirmed" in page.inner_text("#case-status")
        page.screenshot(path=str(shots / "4-confirmed.png"))

        with page.expect_download() as download:  # export the case
            page.click("#export-case")
        archive = zipfile.ZipFile(io.BytesIO(open(download.value.path(), "rb").read()))
    names = set(archive.namelist())
    assert {"case-1/case.json", "case-1/sightings.csv", "case-1/crops/0001.jpg", "case-1/clips/0001.mp4",
            "case-1/crops/0002.jpg", "case-1/clips/0002.mp4"} <= names
    exported = json.loads(archive.read("case-1/case.json"))
    assert [s["decision"] for s in exported["sightings"]] == ["confirmed", "confirmed"] and exported["missing"] == []
    assert [s.decision for s in CaseStore(index).load("case-1").sightings] == ["confirmed", "confirmed"]
    for shot in shots.iterdir():
        assert shot.stat().st_size > 0


def test_a_photo_search_and_query_words_show_what_was_searched(case_server, tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    server, index = case_server
    photo = next((index.parent / "gallery" / "crops" / "cam3_avi").glob("t0001_*.jpg"))
    with page_at(server) as page:
        page.set_input_files("#photo", str(photo))
        page.fill("#top-k", "3")
        page.click("#search-button")
        page.wait_for_function(f"document.getElementById('status').textContent.includes('the photo {photo.name}')")
        assert page.locator("#results .card").count() == 3
        page.locator("#results .card").first.click()  # no text: the result's own part scores
        page.wait_for_selector("#detail:not([hidden]) #maps figure")
        assert "image against image" in page.inner_text("#detail-score")

        page.set_input_files("#photo", [])
        page.fill("#query", "red blue on camera gate")  # tracks, with the filter read from the words
        page.click("#search-button")
        page.wait_for_function("document.getElementById('status').textContent.includes('tracks for')")
        assert "understood “on camera gate” as camera gate" in page.inner_text("#status")
        assert all("cam3.avi" in t for t in page.locator("#results .card").all_inner_texts())
        page.uncheck("#tracks")
        page.fill("#query", "red blue on camera gate")
        page.click("#search-button")
        page.wait_for_function("document.getElementById('status').textContent.includes('understood')")
        status = page.inner_text("#status")
        assert "“red blue”" in status and "understood “on camera gate” as camera gate" in status
        assert all("gate" in t for t in page.locator("#results .card").all_inner_texts())


def test_a_track_card_shows_its_camera_and_wall_clock_span(case_server, monkeypatch):
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    server, _ = case_server
    with page_at(server) as page:
        assert page.is_checked("#tracks")
        page.fill("#query", "red blue")
        page.click("#search-button")
        page.wait_for_selector("#results .card")
        texts = page.locator("#results .card").all_inner_texts()
    assert all(re.search(r"(door|yard|gate) · cam\d\.avi", t) for t in texts), texts
    assert all(re.search(r"08:[0-2]\d:\d\d–08:[0-2]\d:\d\d", t) for t in texts), texts
