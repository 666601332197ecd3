"""Every crop result from footage says where and when (issue 26 item 4): the Python result, the
CLI's --json and text, and the HTTP API carry the crop's video record, with camera and wall-clock
time, and HTTP gives URLs instead of server paths."""

import json

from fastapi.testclient import TestClient
from search_fakes import camera_gallery, make_ingest_gallery

from partsearch.search.display import format_table
from partsearch.search.index import build_index
from partsearch.search.searcher import Searcher
from partsearch.search.service import create_app
from partsearch.search.store import IndexStore

LOCAL = "http://127.0.0.1"
TRACKS = {("cam1.avi", 1): [("red", "blue")] * 2, ("cam2.avi", 1): [("green", "black")] * 2}
CAMERAS = {"cam1.avi": ("door", "2026-01-31T08:00:00+01:00"), "cam2.avi": ("yard", None)}
FIELDS = {"video", "camera", "frame", "time", "wall_time", "box", "track"}


def _index(tmp_path, encoder, records=None):
    gallery = tmp_path / "gallery"
    records = records if records is not None else camera_gallery(gallery, TRACKS, CAMERAS)
    out = tmp_path / "index"
    build_index(encoder, gallery, out, progress=False, video_records=records)
    return out


def test_a_crop_result_carries_its_video_camera_time_frame_box_and_track(tmp_path, encoder):
    out = _index(tmp_path, encoder)
    first = Searcher(out, encoder=encoder).search("red top blue trousers", k=1)[0]
    assert set(first.video) == FIELDS | {"path"}
    assert first.video["camera"] == "door" and first.video["video"] == "videos/cam1.avi"
    assert first.video["track"] == 1 and first.video["time"] == first.video["frame"] / 10
    assert first.video["wall_time"].startswith("2026-01-31T08:00:00.") and first.video["wall_time"].endswith("+01:00")
    assert first.video["box"] == [10, 20, 42, 84]


def test_a_camera_without_a_known_start_has_no_wall_time(tmp_path, encoder):
    out = _index(tmp_path, encoder)
    first = Searcher(out, encoder=encoder).search("green top black trousers", k=1)[0]
    assert (first.video["camera"], first.video["wall_time"]) == ("yard", None)


def test_records_without_camera_take_the_video_stem(tmp_path, encoder):
    records = make_ingest_gallery(tmp_path / "gallery", TRACKS)  # records of an older ingest
    out = _index(tmp_path, encoder, records)
    first = Searcher(out, encoder=encoder).search("green top", k=1)[0]
    assert (first.video["camera"], first.video["wall_time"]) == ("cam2", None)


def test_a_manifest_without_camera_and_wall_time_still_loads(tmp_path, encoder):
    out = _index(tmp_path, encoder)
    store = IndexStore(out)
    for manifest in store.segments_dir.glob("*/manifest.jsonl"):
        lines = [json.loads(line) for line in manifest.read_text().splitlines()]
        for line in lines:
            del line["video"]["camera"], line["video"]["wall_time"]
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    entries = IndexStore(out).load().entries
    assert {e.video.camera for e in entries} == {"cam1", "cam2"}
    assert {e.video.wall_time for e in entries} == {None}


def test_json_and_text_of_a_crop_result_say_where_and_when(tmp_path, encoder):
    out = _index(tmp_path, encoder)
    response = Searcher(out, encoder=encoder).query("red top", k=2)
    as_json = json.loads(json.dumps(response.to_dict()))
    assert set(as_json["results"][0]["video"]) == FIELDS | {"path"}
    text = format_table(response)
    video = tmp_path / "gallery" / "videos" / "cam1.avi"
    assert f"camera door, {video} at 0.10 s (2026-01-31T08:00:00.100000+01:00), frame 1, track 1" in text


def test_a_crop_result_names_its_video_by_a_path_that_opens_from_anywhere(tmp_path, encoder, monkeypatch):
    """The record keeps the video relative to the images root; the result also gives the path a
    user can open, whatever folder they search from (it read `../../..` from elsewhere)."""
    out = _index(tmp_path, encoder)
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    first = Searcher(out, encoder=encoder).search("red top blue trousers", k=1)[0]
    assert first.video["path"] == str(tmp_path / "gallery" / "videos" / "cam1.avi")
    assert first.video["video"] == "videos/cam1.avi"


def test_http_results_carry_the_video_record_with_urls_not_paths(tmp_path, encoder):
    out = _index(tmp_path, encoder)
    client = TestClient(create_app(Searcher(out, encoder=encoder)), base_url=LOCAL)
    result = client.post("/api/search", json={"query": "red top", "top_k": 1}).json()["results"][0]
    assert "path" not in result
    video = result["video"]
    assert FIELDS <= set(video) and video["camera"] == "door" and "path" not in video
    assert video["video_url"] == f"/api/images/{result['id']}/video"
    assert video["frame_url"] == f"/api/images/{result['id']}/frame"
    assert str(tmp_path) not in json.dumps(result)


def test_a_plain_image_result_has_no_video_record(index_dir, encoder):
    assert Searcher(index_dir, encoder=encoder).search("red", k=1)[0].video is None


def test_a_track_result_gives_the_wall_clock_span_when_the_camera_start_is_known(tmp_path, encoder):
    out = _index(tmp_path, encoder)
    results = Searcher(out, encoder=encoder).query_tracks("red top blue trousers", k=2).results
    door = next(r for r in results if r.camera == "door")
    assert door.start_wall_time.startswith("2026-01-31T08:00:00.100") and door.start_wall_time.endswith("+01:00")
    assert door.end_wall_time > door.start_wall_time
    yard = next(r for r in results if r.camera == "yard")
    assert (yard.start_wall_time, yard.end_wall_time) == (None, None)


def test_a_camera_name_that_is_not_valid_text_is_answered_escaped_not_as_a_server_error(tmp_path, encoder):
    # A video file name of bytes that are not UTF-8 gives Python a name with a lone surrogate.
    records = camera_gallery(tmp_path / "gallery", TRACKS, {"cam1.avi": ("door\udcff", None), "cam2.avi": ("yard", None)})
    client = TestClient(create_app(Searcher(_index(tmp_path, encoder, records), encoder=encoder)), base_url=LOCAL,
                        raise_server_exceptions=False)
    for route in ("/api/search", "/api/search/tracks"):
        answer = client.post(route, json={"query": "red top blue trousers"})
        assert answer.status_code == 200, answer.text
        assert "door\\udcff" in answer.text and "door\udcff" in json.dumps(answer.json(), ensure_ascii=False)
