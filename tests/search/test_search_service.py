"""The HTTP service: every endpoint and every bad input, through FastAPI's TestClient."""

import asyncio
import base64
import errno
import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from search_fakes import COLOURS

from partsearch.search.store import IndexStore
from partsearch.search.searcher import Searcher
from partsearch.search.searcher import MAX_QUERY_CHARS
from partsearch.search.service import create_app
from partsearch.search.service_access import MAX_REQUEST_BYTES, allowed_hosts

KEY = "s3cret"
LOCAL = "http://127.0.0.1:8000"


@pytest.fixture
def client(index_dir, encoder):
    return TestClient(create_app(Searcher(index_dir, encoder=encoder), api_key=KEY), base_url=LOCAL)


@pytest.fixture
def keyless(index_dir, encoder):
    return TestClient(create_app(Searcher(index_dir, encoder=encoder)), base_url=LOCAL)


def _png(colour="red", size=(32, 64), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, tuple(int(255 * x) for x in COLOURS[colour])).save(buffer, format=fmt)
    return buffer.getvalue()


def _upload(client, data, name="x.png", key=KEY):
    headers = {"X-API-Key": key} if key else {}
    return client.post("/api/images", files={"file": (name, data, "application/octet-stream")}, headers=headers)


def test_page_and_its_assets_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_healthz_reports_the_index(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["images"] == 6


def test_search_returns_ranked_results_as_the_searcher(client, index_dir, encoder):
    body = client.post("/api/search", json={"query": "red", "top_k": 3}).json()
    expected = Searcher(index_dir, encoder=encoder).search("red", 3)
    assert [r["id"] for r in body["results"]] == [r.id for r in expected]
    assert [r["rank"] for r in body["results"]] == [1, 2, 3]
    first = body["results"][0]
    assert set(first["levels"]) == {"global", "coarse", "fine"} and len(first["parts"]["fine"]) == 3
    assert first["url"] == f"/api/images/{first['id']}" and "path" not in first
    assert body["truncated"] is False


@pytest.mark.parametrize("query", ["", "   \n\t"])
def test_empty_query_is_422_with_a_message(client, query):
    response = client.post("/api/search", json={"query": query, "top_k": 3})
    assert response.status_code == 422 and "empty" in response.json()["detail"]


@pytest.mark.parametrize("top_k", [0, -1, 1001])
def test_top_k_out_of_range_is_422(client, top_k):
    response = client.post("/api/search", json={"query": "red", "top_k": top_k})
    assert response.status_code == 422 and "1 to 1000" in response.json()["detail"]


def test_top_k_larger_than_the_gallery_returns_the_whole_gallery(client):
    assert len(client.post("/api/search", json={"query": "red", "top_k": 1000}).json()["results"]) == 6


def test_long_query_is_truncated_and_says_so(client):
    body = client.post("/api/search", json={"query": "red " * 40, "top_k": 2}).json()
    assert body["truncated"] is True and len(body["results"]) == 2


def test_huge_query_is_cut_before_tokenizing_and_says_so(client):
    body = client.post("/api/search", json={"query": "red " + "x" * 50_000, "top_k": 2}).json()
    assert body["truncated"] is True and len(body["results"]) == 2


def test_a_huge_query_is_never_echoed_back(client):
    body = client.post("/api/search", json={"query": "red " + "x" * 50_000, "top_k": 2}).json()
    assert body["query"] == ("red " + "x" * 50_000)[:MAX_QUERY_CHARS]


def test_search_body_over_the_request_limit_is_413(client):
    response = client.post("/api/search", json={"query": "red " + "x" * MAX_REQUEST_BYTES, "top_k": 2})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_streamed_body_without_a_length_is_cut_at_the_limit(client):
    chunks = (b"x" * 4096 for _ in range(MAX_REQUEST_BYTES // 4096 + 2))
    response = client.post("/api/search", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


@pytest.mark.parametrize("key", [None, "wrong"])
def test_upload_key_is_checked_before_the_body_is_read(index_dir, encoder, key):
    app = create_app(Searcher(index_dir, encoder=encoder), api_key=KEY)
    reads, sent = [], []

    async def receive():
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    async def send(message):
        sent.append(message)

    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"multipart/form-data; boundary=b"),
               (b"content-length", b"400000000")] + ([(b"x-api-key", key.encode())] if key else [])
    scope = {"type": "http", "method": "POST", "path": "/api/images", "raw_path": b"/api/images",
             "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "root_path": ""}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 401 and reads == []


def test_upload_over_the_body_limit_is_413_before_reading_it(client):
    response = client.post("/api/images", content=b"x", headers={"X-API-Key": KEY, "content-length": "400000000"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example"])
def test_a_host_the_server_was_not_started_for_is_refused(index_dir, encoder, host):
    client = TestClient(create_app(Searcher(index_dir, encoder=encoder)), base_url=f"http://{host}")
    response = client.post("/api/search", json={"query": "red"})
    assert response.status_code == 400 and "--allowed-host" in response.json()["detail"]
    assert client.get("/").status_code == 400


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "[::1]:8000"])
def test_loopback_names_are_answered_by_default(index_dir, encoder, host):
    client = TestClient(create_app(Searcher(index_dir, encoder=encoder)), base_url=f"http://{host}")
    assert client.post("/api/search", json={"query": "red"}).status_code == 200


def test_serve_answers_its_bind_address_and_allowed_hosts(index_dir, encoder):
    hosts = allowed_hosts("10.1.2.3", ["search.lan"])
    app = create_app(Searcher(index_dir, encoder=encoder), allowed_hosts=hosts)
    for host in ("10.1.2.3", "search.lan:8000", "localhost"):
        assert TestClient(app, base_url=f"http://{host}").get("/healthz").status_code == 200
    assert TestClient(app, base_url="http://other.lan").get("/healthz").status_code == 400
    assert allowed_hosts("0.0.0.0", ["*"]) is None


def test_image_is_served_by_id(client, index_dir, images_dir):
    gen = IndexStore(index_dir).load()
    entry = gen.entries[0]
    response = client.get(f"/api/images/{entry.id}")
    assert response.status_code == 200
    assert response.content == (images_dir / entry.path).read_bytes()


@pytest.mark.parametrize("image_id", ["999", "abc", "..%2F..%2Fetc%2Fpasswd", "a%2Fred_blue.jpg", "-1", "1.0"])
def test_unknown_or_path_like_ids_are_404(client, image_id):
    assert client.get(f"/api/images/{image_id}").status_code == 404
    assert client.get(f"/api/images/{image_id}/explain", params={"query": "red"}).status_code == 404


def test_explain_gives_part_scores_and_png_overlays(client):
    top = client.post("/api/search", json={"query": "red blue", "top_k": 1}).json()["results"][0]
    body = client.get(f"/api/images/{top['id']}/explain", params={"query": "red blue"}).json()
    assert body["score"] == pytest.approx(top["score"], abs=1e-5)
    assert [p["score"] for p in body["fine"]] == pytest.approx(top["parts"]["fine"], abs=1e-5)
    assert body["coarse"] == pytest.approx(top["parts"]["coarse"], abs=1e-5)
    assert [p["rows"] for p in body["fine"]] == [[0, 3], [2, 6], [5, 8]]
    for url in [body["foreground"], *(p["overlay"] for p in body["fine"])]:
        assert url.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert image.format == "PNG" and image.size == (32, 64)


def _bomb() -> bytes:
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # ~60 kB on disk, 400 MP decoded
    return bomb.getvalue()


@pytest.mark.parametrize("content", [b"not an image at all", None])
def test_explain_of_a_file_replaced_since_indexing_is_a_json_409(client, index_dir, images_dir, content):
    entry = IndexStore(index_dir).load().entries[0]
    (images_dir / entry.path).write_bytes(_bomb() if content is None else content)
    response = client.get(f"/api/images/{entry.id}/explain", params={"query": "red"})
    assert response.status_code == 409 and "not the file that was indexed" in response.json()["detail"]
    assert "re-run `partsearch index`" in response.json()["detail"]


def test_explain_of_an_empty_query_is_422(client):
    assert client.get("/api/images/0/explain", params={"query": " "}).status_code == 422


def test_upload_adds_a_searchable_image(client, index_dir):
    response = _upload(client, _png("yellow", fmt="WEBP"), "shot.webp")
    assert response.status_code == 201
    new_id = response.json()["id"]
    assert client.get("/healthz").json()["images"] == 7
    assert client.get(f"/api/images/{new_id}").status_code == 200
    top = client.post("/api/search", json={"query": "yellow", "top_k": 1}).json()["results"][0]
    assert top["id"] == new_id
    entry = IndexStore(index_dir).load().entries[-1]
    assert entry.source == "uploads" and (index_dir / "uploads" / entry.path).is_file()


def test_uploading_the_same_bytes_twice_adds_once(client):
    assert _upload(client, _png("yellow")).status_code == 201
    again = _upload(client, _png("yellow"))
    assert again.status_code == 200 and again.json()["added"] is False
    assert client.get("/healthz").json()["images"] == 7


def _nothing_written(index_dir, name_before):
    store = IndexStore(index_dir)
    uploads = index_dir / "uploads"
    return store.current_name() == name_before and (not uploads.exists() or not any(uploads.iterdir()))


def test_upload_checks_the_decoded_format_not_the_name(client, index_dir):
    before = IndexStore(index_dir).current_name()
    response = _upload(client, _png(fmt="GIF"), "looks_fine.png")
    assert response.status_code == 400 and "GIF" in response.json()["detail"]
    assert _nothing_written(index_dir, before)


def test_corrupt_upload_is_400_and_writes_nothing(client, index_dir):
    before = IndexStore(index_dir).current_name()
    data = _png()
    response = _upload(client, data[: len(data) // 2], "cut.png")
    assert response.status_code == 400 and "cut.png" in response.json()["detail"]
    assert _nothing_written(index_dir, before)


def test_upload_over_the_byte_limit_is_413(index_dir, encoder):
    small = TestClient(create_app(Searcher(index_dir, encoder=encoder), api_key=KEY, max_upload_bytes=100),
                       base_url=LOCAL)
    response = _upload(small, _png())
    assert response.status_code == 413 and "100 bytes" in response.json()["detail"]


def test_decompression_bomb_is_413_before_decoding(client, index_dir):
    before = IndexStore(index_dir).current_name()
    response = _upload(client, _bomb(), "bomb.png")
    assert response.status_code == 413 and "pixel" in response.json()["detail"]
    assert _nothing_written(index_dir, before)


def test_delete_removes_from_manifest_and_vectors(client, index_dir):
    entry = IndexStore(index_dir).load().entries[0]
    response = client.delete(f"/api/images/{entry.id}", headers={"X-API-Key": KEY})
    assert response.status_code == 200 and response.json()["images"] == 5
    gen = IndexStore(index_dir).load()
    assert entry.id not in gen.rows and len(gen.vectors) == 5
    assert client.get(f"/api/images/{entry.id}").status_code == 404
    ids = [r["id"] for r in client.post("/api/search", json={"query": "red", "top_k": 10}).json()["results"]]
    assert entry.id not in ids and len(ids) == 5


def test_delete_of_a_gallery_image_never_touches_the_users_file(client, index_dir, images_dir):
    entry = IndexStore(index_dir).load().entries[0]
    data = (images_dir / entry.path).read_bytes()
    assert client.delete(f"/api/images/{entry.id}", headers={"X-API-Key": KEY}).status_code == 200
    assert (images_dir / entry.path).read_bytes() == data


def test_delete_of_an_upload_removes_its_file_under_uploads(client, index_dir):
    new_id = _upload(client, _png("yellow")).json()["id"]
    entry = IndexStore(index_dir).load().entries[-1]
    assert entry.id == new_id and (index_dir / "uploads" / entry.path).is_file()
    assert client.delete(f"/api/images/{new_id}", headers={"X-API-Key": KEY}).status_code == 200
    assert not (index_dir / "uploads" / entry.path).exists()


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_upload_on_a_full_disk_is_a_json_507_and_writes_nothing(client, index_dir, monkeypatch):
    before = IndexStore(index_dir).current_name()
    monkeypatch.setattr(os, "fsync", _disk_full)
    response = _upload(client, _png("yellow"))
    assert response.status_code == 507 and "No space left on device" in response.json()["detail"]
    assert _nothing_written(index_dir, before)
    assert not list(index_dir.glob("gen-*.partial"))


def test_delete_on_a_full_disk_is_a_json_507_and_keeps_the_image(client, index_dir, monkeypatch):
    entry = IndexStore(index_dir).load().entries[0]
    monkeypatch.setattr(os, "fsync", _disk_full)
    response = client.delete(f"/api/images/{entry.id}", headers={"X-API-Key": KEY})
    assert response.status_code == 507 and "No space left on device" in response.json()["detail"]
    assert entry.id in IndexStore(index_dir).load().rows


def test_an_unexpected_server_error_is_a_json_500(index_dir, encoder, monkeypatch):
    searcher = Searcher(index_dir, encoder=encoder)
    monkeypatch.setattr(searcher, "query", lambda *args, **kwargs: 1 / 0)
    response = TestClient(create_app(searcher), raise_server_exceptions=False, base_url=LOCAL).post(
        "/api/search", json={"query": "red"})
    assert response.status_code == 500 and "ZeroDivisionError" in response.json()["detail"]


def test_delete_of_unknown_id_is_404(client):
    assert client.delete("/api/images/4242", headers={"X-API-Key": KEY}).status_code == 404
    assert client.delete("/api/images/..%2Fx", headers={"X-API-Key": KEY}).status_code == 404


@pytest.mark.parametrize("key", [None, "wrong"])
def test_mutations_need_the_right_key(client, key):
    assert _upload(client, _png(), key=key).status_code == 401
    headers = {"X-API-Key": key} if key else {}
    assert client.delete("/api/images/0", headers=headers).status_code == 401
    assert client.get("/healthz").json()["images"] == 6


def test_mutations_are_off_without_a_configured_key(keyless):
    response = _upload(keyless, _png(), key="anything")
    assert response.status_code == 403 and "--api-key" in response.json()["detail"]
    assert keyless.delete("/api/images/0", headers={"X-API-Key": "anything"}).status_code == 403


def test_fifty_concurrent_searches_are_all_answered_correctly(client, index_dir, encoder):
    words = list(COLOURS)
    searcher = Searcher(index_dir, encoder=encoder)
    expected = {w: [r.id for r in searcher.search(w, 3)] for w in words}

    def ask(i):
        word = words[i % len(words)]
        response = client.post("/api/search", json={"query": word, "top_k": 3})
        return word, response.status_code, [r["id"] for r in response.json()["results"]]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, range(50)))
    assert all(status == 200 and ids == expected[word] for word, status, ids in answers)


def test_searches_run_while_uploads_change_the_index(client):
    colours = ["yellow", "green", "blue", "white"]

    def ask(i):
        if i % 10 == 0:
            return _upload(client, _png(colours[i // 10], size=(32, 60 + i))).status_code
        return client.post("/api/search", json={"query": "red", "top_k": 3}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(ask, range(40)))
    assert codes.count(201) == 4 and codes.count(200) == 36
    assert client.get("/healthz").json()["images"] == 10


def test_a_busy_port_is_one_clear_error_before_anything_claims_to_serve(tmp_path, capsys):
    import argparse
    import socket

    from partsearch.errors import UserError
    from partsearch.commands.serve import run as main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        args = argparse.Namespace(index_dir=str(tmp_path / "no-index"), host="127.0.0.1", port=port,
                                  allowed_host=[], api_key=None, run=None, checkpoint="best")
        with pytest.raises(UserError, match=rf"cannot listen on 127.0.0.1:{port}.*--port"):
            main(args)
    assert "serving" not in capsys.readouterr().out


def test_a_malformed_search_request_is_one_readable_line(client):
    response = client.post("/api/search", json={"query": "red", "top_k": None})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("top_k: ") and isinstance(response.json()["detail"], str)
