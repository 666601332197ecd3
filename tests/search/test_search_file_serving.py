"""The service serves only what the index put there (issue 29): a gallery whose records or files
point outside its folders, by a path or by a symlink, cannot make it return a byte of them."""

import json

import pytest
from fastapi.testclient import TestClient
from search_fakes import make_ingest_gallery, write_video_for

from partsearch.search.index import build_index
from partsearch.search.searcher import Searcher
from partsearch.search.service import create_app
from partsearch.search.store import IndexStore
from partsearch.video.ingest import read_records

LOCAL = "http://127.0.0.1"
TRACKS = {("cam1.avi", 1): [("red", "blue")] * 2}
SECRET = b"root:x:0:0:root:/root:/bin/bash\n"


@pytest.fixture
def client(index_dir, encoder):
    return TestClient(create_app(Searcher(index_dir, encoder=encoder)), base_url=LOCAL)


def _point_records_at(gallery, video):
    """What a hostile gallery does: every record and the marker name `video`."""
    folder = gallery / "crops" / "cam1_avi"
    lines = [dict(json.loads(line), video=video) for line in (folder / "records.jsonl").read_text().splitlines()]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    marker = json.loads((folder / "video.json").read_text())
    (folder / "video.json").write_text(json.dumps(dict(marker, video=video)))


def _serve(tmp_path, encoder, gallery, **kw):
    out = tmp_path / "index"
    build_index(encoder, gallery, out, progress=False, video_records=read_records(gallery), **kw)
    return TestClient(create_app(Searcher(out, encoder=encoder)), base_url=LOCAL), out


def _gallery(tmp_path, with_video=True):
    gallery = tmp_path / "gallery"
    make_ingest_gallery(gallery, TRACKS)
    if with_video:
        write_video_for(gallery, "cam1.avi")
    return gallery


def test_a_record_naming_a_file_outside_the_gallery_is_left_out_with_a_warning(tmp_path, encoder, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    gallery = _gallery(tmp_path)
    _point_records_at(gallery, "../secret.txt")
    client, out = _serve(tmp_path, encoder, gallery)
    assert "left out the crops of video '../secret.txt'" in capsys.readouterr().err
    assert all(e.video is None for e in IndexStore(out).load().entries)
    answer = client.get("/api/images/0/video")
    assert answer.status_code == 404 and SECRET not in answer.content


def test_an_absolute_video_path_in_a_record_is_refused_too(tmp_path, encoder, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    gallery = _gallery(tmp_path)
    _point_records_at(gallery, str(secret))
    client, _ = _serve(tmp_path, encoder, gallery)
    assert "outside the gallery and every --video-root" in capsys.readouterr().err
    assert SECRET not in client.get("/api/images/0/video").content


def test_a_video_root_the_user_gives_allows_videos_outside_the_gallery(tmp_path, encoder):
    gallery = _gallery(tmp_path, with_video=False)
    video = write_video_for(tmp_path / "elsewhere", "cam1.avi")
    _point_records_at(gallery, "../elsewhere/videos/cam1.avi")
    client, _ = _serve(tmp_path, encoder, gallery, video_roots=[tmp_path / "elsewhere"])
    answer = client.get("/api/images/0/video")
    assert answer.status_code == 200 and answer.content == video.read_bytes()


def test_a_record_whose_video_is_not_the_one_its_marker_names_is_left_out(tmp_path, capsys):
    gallery = _gallery(tmp_path)
    folder = gallery / "crops" / "cam1_avi"
    lines = folder.joinpath("records.jsonl").read_text().splitlines()
    folder.joinpath("records.jsonl").write_text(
        "\n".join([json.dumps(dict(json.loads(lines[0]), video="videos/other.avi")), *lines[1:]]) + "\n")
    assert len(read_records(gallery)) == len(lines) - 1
    assert "videos/other.avi" in capsys.readouterr().err


def test_a_video_replaced_by_a_symlink_after_indexing_is_a_409_without_its_bytes(tmp_path, encoder):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    gallery = _gallery(tmp_path)
    client, _ = _serve(tmp_path, encoder, gallery)
    video = gallery / "videos" / "cam1.avi"
    video.unlink()
    video.symlink_to(secret)
    for endpoint in ("video", "frame"):
        answer = client.get(f"/api/images/0/{endpoint}")
        assert answer.status_code == 409 and "not the file that was indexed" in answer.json()["detail"]


def test_a_video_rewritten_after_indexing_is_a_409(tmp_path, encoder):
    gallery = _gallery(tmp_path)
    client, _ = _serve(tmp_path, encoder, gallery)
    (gallery / "videos" / "cam1.avi").write_bytes(b"another file")
    assert client.get("/api/images/0/video").status_code == 409


def test_a_crop_replaced_by_a_symlink_is_a_409_without_its_bytes(tmp_path, encoder):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    gallery = _gallery(tmp_path)
    client, out = _serve(tmp_path, encoder, gallery)
    entry = IndexStore(out).load().entries[0]
    crop = gallery / entry.path
    crop.unlink()
    crop.symlink_to(secret)
    answer = client.get(f"/api/images/{entry.id}")
    assert answer.status_code == 409 and SECRET not in answer.content
    assert "not the file that was indexed" in answer.json()["detail"]


def test_a_symlink_in_the_gallery_to_an_image_outside_it_is_never_read_or_indexed(tmp_path, encoder, capsys):
    gallery = _gallery(tmp_path)
    outside = tmp_path / "elsewhere" / "private.jpg"
    outside.parent.mkdir()
    first = sorted((gallery / "crops" / "cam1_avi").glob("*.jpg"))[0]
    outside.write_bytes(first.read_bytes()[:-2] + b"\xff\xd9")  # another person's image, not a copy of a crop
    (gallery / "crops" / "theirs.jpg").symlink_to(outside)
    _, out = _serve(tmp_path, encoder, gallery)
    assert "crops/theirs.jpg" not in {e.path for e in IndexStore(out).load().entries}
    assert "skipped crops/theirs.jpg: it leads outside" in capsys.readouterr().err


def test_a_crop_symlinked_to_an_identical_copy_inside_the_gallery_is_served(tmp_path, encoder):
    gallery = _gallery(tmp_path)
    client, out = _serve(tmp_path, encoder, gallery)
    entry = IndexStore(out).load().entries[0]
    crop = gallery / entry.path
    copy = gallery / "copy.jpg"
    copy.write_bytes(crop.read_bytes())
    crop.unlink()
    crop.symlink_to(copy)
    answer = client.get(f"/api/images/{entry.id}")
    assert answer.status_code == 200 and answer.content == copy.read_bytes()


def test_range_errors_are_json(tmp_path, encoder):
    gallery = _gallery(tmp_path)
    client, _ = _serve(tmp_path, encoder, gallery)
    size = (gallery / "videos" / "cam1.avi").stat().st_size
    malformed = client.get("/api/images/0/video", headers={"Range": "pages=1-2"})
    assert malformed.status_code == 400 and "Range" in malformed.json()["detail"]
    beyond = client.get("/api/images/0/video", headers={"Range": f"bytes={size + 10}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"
    assert "beyond" in beyond.json()["detail"]
    assert client.get("/api/images/0/video", headers={"Range": "bytes=0-9"}).status_code == 206


def test_a_query_python_cannot_encode_is_a_422(client):
    for endpoint in ("/api/search", "/api/search/tracks"):
        answer = client.post(endpoint, content=b'{"query": "red \\ud800 coat"}',
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 422 and "lone surrogate" in answer.json()["detail"]


def test_a_422_does_not_name_the_index_folder(client, index_dir):
    answer = client.post("/api/search/tracks", json={"query": "red"})
    assert answer.status_code == 422 and str(index_dir) not in answer.json()["detail"]


def test_a_404_does_not_echo_a_long_id_in_full(client):
    answer = client.get("/api/images/" + "9" * 5000)
    assert answer.status_code == 404 and len(answer.json()["detail"]) < 200


def test_the_command_line_says_one_line_for_a_query_it_cannot_encode(index_dir, capsys):
    from partsearch.cli import main

    assert main(["search", str(index_dir), "red \udcff coat"]) == 2
    err = capsys.readouterr().err
    assert "lone surrogate" in err and "Traceback" not in err
