"""The web page in a real headless Chromium (Debian's), against uvicorn on a free loopback port."""

import re
import os
import shutil
import socket
import threading
import time

import pytest
import uvicorn

from partsearch.search.searcher import Searcher
from partsearch.search.service import create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) or shutil.which("chromium")),
                       reason="no Chromium at /usr/bin/chromium (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(index_dir, encoder):
    yield from _serve(Searcher(index_dir, encoder=encoder))


def test_page_searches_and_explains_a_match(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    sync_api = pytest.importorskip("playwright.sync_api")
    outside = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((server, "data:")) else None)
            page.goto(server + "/")
            page.fill("#query", "red")
            page.fill("#top-k", "4")
            page.click("#search-button")
            page.wait_for_selector("#results .card")
            cards = page.locator("#results .card")
            assert cards.count() == 4
            assert page.locator("#results .card .rank").first.inner_text().startswith("#1")
            assert page.locator("#results .card .name").first.inner_text() == "red_red.png"
            assert page.locator("#results .card img").first.evaluate("img => img.complete && img.naturalWidth") == 32
            cards.first.click()
            page.wait_for_selector("#detail:not([hidden]) #maps figure")
            assert page.locator("#maps figure").count() == 4  # foreground + 3 stripes
            assert page.locator("#coarse .score-row").count() == 2
            assert "red_red.png" in page.inner_text("#detail-title")
            page.screenshot(path=str(tmp_path / "search.png"), full_page=True)

            page.fill("#query", "   ")
            page.click("#search-button")
            page.wait_for_selector("#status.error")
            assert "empty" in page.inner_text("#status")
        finally:
            browser.close()
    assert (tmp_path / "search.png").stat().st_size > 0
    assert outside == []


@pytest.fixture
def big_server(tmp_path, encoder, monkeypatch):
    """A gallery of 80 crops in five colours (no yellow), and a match threshold of 2.9 (a perfect
    colour match scores 3)."""
    from search_fakes import COLOURS, make_crop

    from partsearch.search import threshold
    from partsearch.search.index import build_index

    monkeypatch.setattr(threshold, "for_run", lambda enc: 2.9)
    colours = [c for c in COLOURS if c != "yellow"]
    for i in range(80):
        make_crop(tmp_path / "big" / f"{i:02d}.png", colours[i % 5], colours[(i // 5) % 5], size=(32 + i % 7, 64))
    build_index(encoder, tmp_path / "big", tmp_path / "big_index", progress=False)
    yield from _serve(Searcher(tmp_path / "big_index", encoder=encoder))


def _serve(searcher):
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(searcher), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(monkeypatch):
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _search(page, server, query, top_k):
    page.goto(server + "/")
    page.fill("#query", query)
    page.fill("#top-k", str(top_k))
    page.click("#search-button")
    page.wait_for_selector("#results .card")


def test_on_a_phone_the_page_does_not_scroll_sideways_and_the_panel_fits(big_server, browser):
    page = browser.new_page(viewport={"width": 375, "height": 740})
    _search(page, big_server, "red", 12)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.locator("#results .card").nth(7).click()
    page.wait_for_selector("#detail:not([hidden]) #maps figure")
    box = page.locator("#detail").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375 and box["y"] >= 0 and box["y"] < 740
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_the_panel_opens_in_view_from_a_card_far_down(big_server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 600})
    _search(page, big_server, "red", 80)
    card = page.locator("#results .card").nth(70)
    card.scroll_into_view_if_needed()
    card.click()
    page.wait_for_selector("#detail:not([hidden]) #maps figure")
    box = page.locator("#detail").bounding_box()
    assert 0 <= box["y"] < 600 and box["y"] + 40 < 600


def test_cards_open_with_the_keyboard_and_escape_closes_the_panel(big_server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    _search(page, big_server, "red", 6)
    page.locator("#results .card").nth(2).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail:not([hidden]) #maps figure")
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail[hidden]", state="attached")
    assert page.evaluate("document.activeElement.dataset.id") == page.locator("#results .card").nth(2).get_attribute("data-id")


def test_a_blank_top_k_is_a_plain_message(big_server, browser):
    page = browser.new_page()
    page.goto(big_server + "/")
    page.fill("#query", "red")
    page.fill("#top-k", "")
    page.click("#search-button")
    page.wait_for_selector("#status.error")
    text = page.inner_text("#status")
    assert "1 to 1000" in text and "{" not in text and "[" not in text


def test_scores_are_absolute_and_a_query_nobody_matches_says_so(big_server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    _search(page, big_server, "red", 5)
    assert "No result is a good match" not in page.inner_text("#status")
    _search(page, big_server, "a person in a yellow coat", 5)
    assert "No result is a good match" in page.inner_text("#status")
    assert page.locator("#results .card.weak").count() == 5
    best = float(page.locator("#results .card .rank").first.inner_text().split()[1])
    first_bar = page.locator("#results .card .bar > span").first.evaluate("s => parseFloat(s.style.width)")
    assert best < 2.9 and first_bar == pytest.approx(100 * best / 3, abs=0.1)  # its share of 3, not 100%


def test_fine_parts_are_named_by_their_body_region(big_server, browser):
    from partsearch.model.fine import stripe_regions

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    _search(page, big_server, "red", 3)
    page.locator("#results .card").first.click()
    page.wait_for_selector("#detail:not([hidden]) #maps figure")
    captions = page.locator("#maps figcaption").all_inner_texts()
    assert captions[0].startswith("foreground")
    assert [re.sub(r" [-+]?[0-9].*$", "", c) for c in captions[1:]] == stripe_regions(len(captions) - 1)
    assert all(c.endswith(" sd)") for c in captions[1:])  # each part also relative to the gallery


@pytest.fixture
def track_server(tmp_path, encoder):
    """An index of a `partsearch ingest` gallery of two videos, one of them on disk."""
    from search_fakes import make_ingest_gallery, write_video_for

    from partsearch.search.index import build_index
    from partsearch.video.ingest import read_records

    gallery = tmp_path / "gallery"
    make_ingest_gallery(gallery, {("cam1.avi", 1): [("red", "blue")] * 3, ("cam1.avi", 2): [("green", "black")] * 2,
                                  ("cam2.avi", 1): [("white", "red")] * 2})
    write_video_for(gallery, "cam1.avi")
    build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=read_records(gallery))
    yield from _serve(Searcher(tmp_path / "index", encoder=encoder))


def test_a_track_card_shows_video_time_and_best_crop_and_opens_its_frame(track_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(track_server + "/")
    page.wait_for_selector("#tracks-toggle:not([hidden])")
    assert page.is_checked("#tracks")
    _search(page, track_server, "red blue", 3)
    first = page.locator("#results .card").first
    assert "cam1.avi" in first.inner_text() and "0:00.1–0:01.1 · 3 crops" in first.inner_text()
    assert first.locator("img").evaluate("img => img.complete && img.naturalWidth") == 32
    assert "3 tracks" in page.inner_text("#status")
    first.click()
    page.wait_for_selector("#frame-view:not([hidden])")
    page.wait_for_function("document.getElementById('frame-image').naturalWidth === 160")
    assert "frame 1 at 0:00.1" in page.inner_text("#frame-caption")
    page.screenshot(path=str(tmp_path / "tracks.png"), full_page=True)
    page.locator("#results .card", has_text="cam2.avi").click()  # not on disk: the page says so
    page.wait_for_function("document.getElementById('frame-caption').textContent.includes('cannot be read')")
    assert page.is_hidden("#frame-image")


def test_the_page_says_a_footage_threshold_is_where_a_score_stands_out_from_the_gallery(track_server, browser):
    page = browser.new_page()
    page.goto(track_server + "/")
    page.wait_for_selector("#tracks-toggle:not([hidden])")
    _search(page, track_server, "red blue", 3)
    note = page.inner_text("#weak-note")
    assert "stands out from this gallery" in note and "validation" not in note


def test_a_track_of_a_person_who_came_back_shows_each_visit(tmp_path, encoder, browser):
    from search_fakes import make_ingest_gallery

    from partsearch.search.index import build_index

    gallery = tmp_path / "gallery"
    records = make_ingest_gallery(gallery, {("cam1.avi", 1): [("red", "blue")] * 4})
    for record, t in zip(records, [0.5, 1.0, 30.0, 30.5]):  # seen, gone for 29 s, back: one re-identified track
        record["time"], record["frame"] = t, round(10 * t)
    build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=records)
    for url in _serve(Searcher(tmp_path / "index", encoder=encoder)):
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        _search(page, url, "red blue", 1)
        assert "0:00.5–0:01.0, 0:30.0–0:30.5 · 4 crops" in page.locator("#results .card").first.inner_text()
        page.screenshot(path=str(tmp_path / "visits.png"), full_page=True)


def test_a_track_in_a_video_the_browser_cannot_play_offers_the_file_instead(track_server, browser):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(track_server + "/")
    page.wait_for_selector("#tracks-toggle:not([hidden])")
    _search(page, track_server, "red blue", 3)
    page.locator("#results .card").first.click()
    page.wait_for_selector("#video-note:not([hidden])")
    assert "This browser cannot play cam1.avi (video/x-msvideo)" in page.inner_text("#video-note")
    assert page.is_hidden("#frame-video") and page.is_hidden("#play-video")
    link = page.locator("#video-note a")
    assert link.get_attribute("href").endswith("/video") and link.inner_text() == "download cam1.avi"


@pytest.fixture
def webm_server(tmp_path, encoder):
    """An index of one track in a WebM (VP8) video, a format browsers play: 40 flat frames at 10
    frames/s, frame i of grey level 5 i."""
    import cv2
    import numpy as np
    from search_fakes import make_ingest_gallery

    from partsearch.search.index import build_index
    from partsearch.video.ingest import read_records

    gallery = tmp_path / "gallery"
    make_ingest_gallery(gallery, {("cam3.webm", 1): [("red", "blue")] * 3})
    (gallery / "videos").mkdir()
    writer = cv2.VideoWriter(str(gallery / "videos" / "cam3.webm"), cv2.VideoWriter_fourcc(*"VP80"), 10.0, (160, 120))
    assert writer.isOpened(), "this OpenCV build writes no VP8"
    for i in range(40):
        writer.write(np.full((120, 160, 3), 5 * i, np.uint8))
    writer.release()
    build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=read_records(gallery))
    yield from _serve(Searcher(tmp_path / "index", encoder=encoder))


def test_a_track_in_a_playable_video_plays_from_its_best_crops_time_on_a_click(webm_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    requests = []
    page.on("request", lambda r: requests.append(r.headers.get("range")) if r.url.endswith("/video") else None)
    page.goto(webm_server + "/")
    page.wait_for_selector("#tracks-toggle:not([hidden])")
    _search(page, webm_server, "red blue", 1)
    page.locator("#results .card").first.click()
    page.wait_for_selector("#play-video:not([hidden])")
    assert page.is_hidden("#frame-video") and page.is_visible("#frame-image")  # the frame with its box first
    page.click("#play-video")
    page.wait_for_selector("#frame-video:not([hidden])")
    assert page.is_hidden("#frame-image")
    best = page.evaluate("fetch('/api/search/tracks', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                         " body: JSON.stringify({query: 'red blue', top_k: 1})}).then(r => r.json())")["results"][0]["best"]
    # it plays, and began where the best crop was seen
    page.wait_for_function("(v => v.played.length > 0 && Math.abs(v.played.start(0) - "
                           f"{best['time']}) < 0.05)(document.getElementById('frame-video'))")
    assert page.is_hidden("#video-note")
    assert any(r and r.startswith("bytes=") for r in requests)  # the browser asked for ranges
    page.screenshot(path=str(tmp_path / "video.png"), full_page=True)
