"""The web page in a real headless Chromium (Debian's), against uvicorn on a free loopback port."""

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
    port = _free_port()
    config = uvicorn.Config(create_app(Searcher(index_dir, encoder=encoder)), host="127.0.0.1", port=port,
                            log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


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
