"""A person's sightings across videos and cameras, decisions kept in the index's case data, and a
case exported as a folder that holds the evidence on its own."""

import csv
import json

import pytest
from search_fakes import camera_gallery, write_video_for

from partsearch.errors import DataError, QueryError
from partsearch.search.cases import CaseStore
from partsearch.search.compaction import compact
from partsearch.search.export import export_case
from partsearch.search.index import build_index
from partsearch.search.searcher import Searcher
from partsearch.search.sightings import add_sighting, find_sightings

TRACKS = {
    ("cam1.avi", 1): [("red", "blue")] * 3,     # the person
    ("cam1.avi", 2): [("green", "black")] * 3,
    ("cam1.avi", 3): [("red", "blue")] * 2,     # looks the same, but in the same video at the same time
    ("cam2.avi", 1): [("red", "blue")] * 2,     # the person again, on another camera
    ("cam2.avi", 2): [("white", "red")] * 2,
    ("cam2.avi", 3): [("green", "black")] * 2,
}
CAMERAS = {"cam1.avi": ("door", "2026-01-31T08:00:00+00:00"), "cam2.avi": ("yard", "2026-01-31T08:10:00+00:00")}


@pytest.fixture
def searcher(tmp_path, encoder):
    gallery = tmp_path / "gallery"
    records = camera_gallery(gallery, TRACKS, CAMERAS)
    for video in ("cam1.avi", "cam2.avi"):
        write_video_for(gallery, video)
    build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=records)
    return Searcher(tmp_path / "index", encoder=encoder)


def _crop(searcher, video, track):
    gen = searcher.current()
    return gen.entries[gen.tracks[(f"videos/{video}", track)][0]].id


def test_the_same_person_on_another_camera_is_the_first_sighting(searcher):
    response = find_sightings(searcher, _crop(searcher, "cam1.avi", 1), k=3)
    roles = [(r.role, r.sighting.camera, r.sighting.track) for r in response.results]
    assert roles[0] == ("source", "door", 1)
    assert roles[1] == ("found", "yard", 1)
    assert set(response.timeline) == {"door", "yard"} and response.timeline["door"] == [1]


def test_a_track_of_the_same_video_at_the_same_time_is_another_person(searcher):
    response = find_sightings(searcher, _crop(searcher, "cam1.avi", 1), k=10)
    assert ("videos/cam1.avi", 3) not in [(r.sighting.video, r.sighting.track) for r in response.results]


def test_max_gap_leaves_out_tracks_too_far_in_time(searcher):
    source = _crop(searcher, "cam1.avi", 1)
    near = find_sightings(searcher, source, k=10, max_gap=60)  # cam2 starts 10 minutes later
    assert {r.sighting.camera for r in near.results} == {"door"}
    far = find_sightings(searcher, source, k=10, max_gap=700)
    assert "yard" in {r.sighting.camera for r in far.results}


def test_a_rejected_sighting_is_never_returned_and_a_confirmed_one_is_marked(searcher):
    source = _crop(searcher, "cam1.avi", 1)
    add_sighting(searcher, "case-1", _crop(searcher, "cam2.avi", 1), "rejected")
    add_sighting(searcher, "case-1", _crop(searcher, "cam2.avi", 2), "confirmed")
    case = CaseStore(searcher.store).load("case-1")
    response = find_sightings(searcher, source, k=10, case=case)
    found = {(r.sighting.camera, r.sighting.track): (r.role, r.sighting.decision) for r in response.results}
    assert ("yard", 1) not in found
    assert found[("yard", 2)] == ("confirmed", "confirmed")


def test_decisions_survive_a_restart_and_compaction(searcher, encoder, tmp_path):
    add_sighting(searcher, "case-1", _crop(searcher, "cam2.avi", 1), "rejected", query="red top")
    compact(tmp_path / "index")
    again = Searcher(tmp_path / "index", encoder=encoder)
    case = CaseStore(tmp_path / "index").load("case-1")
    assert [(s.camera, s.track, s.decision, s.query) for s in case.sightings] == [("yard", 1, "rejected", "red top")]
    response = find_sightings(again, _crop(again, "cam1.avi", 1), k=10, case=case)
    assert ("yard", 1) not in {(r.sighting.camera, r.sighting.track) for r in response.results}


def test_deciding_again_updates_the_sighting_instead_of_adding_one(searcher):
    crop = _crop(searcher, "cam2.avi", 1)
    add_sighting(searcher, "c", crop)
    case = add_sighting(searcher, "c", crop, "confirmed", note="same coat")
    assert [(s.decision, s.note) for s in case.sightings] == [("confirmed", "same coat")]


def test_a_bad_case_name_or_decision_is_named(searcher):
    with pytest.raises(QueryError, match="case name"):
        add_sighting(searcher, "../x", _crop(searcher, "cam2.avi", 1))
    with pytest.raises(QueryError, match="decision 'maybe'"):
        add_sighting(searcher, "c", _crop(searcher, "cam2.avi", 1), "maybe")
    with pytest.raises(QueryError, match="no case 'nope'"):
        CaseStore(searcher.store).load("nope")


def test_export_writes_json_csv_crops_frames_and_clips(searcher, tmp_path):
    add_sighting(searcher, "c", _crop(searcher, "cam1.avi", 1), "confirmed", query="red top", score=2.5)
    add_sighting(searcher, "c", _crop(searcher, "cam2.avi", 1), "confirmed", query="red top", score=2.1)
    out = tmp_path / "export"
    body = export_case(searcher, "c", out)
    assert body["missing"] == []
    data = json.loads((out / "case.json").read_text())
    assert [(s["camera"], s["track"], s["decision"]) for s in data["sightings"]] == [("door", 1, "confirmed"),
                                                                                      ("yard", 1, "confirmed")]
    rows = list(csv.DictReader((out / "sightings.csv").open()))
    assert rows[0]["camera"] == "door" and rows[0]["query"] == "red top" and rows[0]["box"] == "[10, 20, 42, 84]"
    for s in data["sightings"]:
        for key in ("crop", "frame_image", "clip"):
            assert (out / s[key]).stat().st_size > 0
    import cv2

    clip = cv2.VideoCapture(str(out / data["sightings"][0]["clip"]))
    assert clip.get(cv2.CAP_PROP_FRAME_COUNT) >= 10  # frames 0.1-1.1 s plus 1 s either side, at 10 fps
    clip.release()


def test_a_deleted_video_leaves_the_cases_copies_and_names_the_missing_clip(searcher, tmp_path):
    add_sighting(searcher, "c", _crop(searcher, "cam2.avi", 1), "confirmed")
    (tmp_path / "gallery" / "videos" / "cam2.avi").unlink()
    body = export_case(searcher, "c", tmp_path / "export")
    assert body["sightings"][0]["frame_image"] is not None  # the case's own copy
    assert body["sightings"][0]["clip"] is None
    assert any("clip of videos/cam2.avi" in m for m in body["missing"])


def test_an_export_never_overwrites_a_folder(searcher, tmp_path):
    add_sighting(searcher, "c", _crop(searcher, "cam2.avi", 1))
    (tmp_path / "export").mkdir()
    with pytest.raises(DataError, match="exists"):
        export_case(searcher, "c", tmp_path / "export")
    assert not any(p.name.startswith(".export") for p in tmp_path.iterdir())


KEY = "k" * 16


def test_http_sightings_cases_and_export(searcher):
    import io
    import zipfile

    from fastapi.testclient import TestClient

    from partsearch.search.service import create_app

    client = TestClient(create_app(searcher, api_key=KEY), base_url="http://127.0.0.1")
    source = _crop(searcher, "cam1.avi", 1)
    body = client.post("/api/sightings", json={"id": source, "top_k": 3}).json()
    assert body["results"][1]["camera"] == "yard" and body["results"][1]["frame_url"].endswith("/frame")
    assert str(searcher.root.parent) not in json.dumps(body)  # no server paths
    found = body["results"][1]
    assert client.post("/api/cases/c/sightings", json={"id": found["id"], "decision": "confirmed"}).status_code == 401
    case = client.post("/api/cases/c/sightings", json={"id": found["id"], "decision": "confirmed"},
                       headers={"X-API-Key": KEY}).json()
    assert [s["decision"] for s in case["sightings"]] == ["confirmed"]
    assert client.get("/api/cases").json() == {"cases": ["c"]}
    again = client.post("/api/sightings", json={"id": source, "top_k": 3, "case": "c"}).json()
    assert [r["role"] for r in again["results"]][:2] == ["source", "confirmed"]
    archive = client.post("/api/cases/c/export", headers={"X-API-Key": KEY})
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert {"c/case.json", "c/sightings.csv", "c/crops/0001.jpg", "c/frames/0001.jpg", "c/clips/0001.mp4"} <= set(names)
    assert client.post("/api/sightings", json={"id": 10**6}).status_code == 404
    assert client.get("/api/cases/nope").status_code == 404


def test_the_case_table_names_a_video_kept_outside_the_gallery_by_its_file_name():
    from partsearch.commands.case import format_case
    from partsearch.search.cases import Case, Sighting

    sighting = Sighting(id=3, video="../../../../srv/cams/gate.avi", camera="gate", track=2, frame=40, time=4.0,
                        wall_time="2026-01-31T08:00:04.000+00:00", decision="confirmed")
    line = format_case(Case("c", sightings=[sighting])).splitlines()[1]
    assert "camera gate, gate.avi track 2 at 4.00 s (2026-01-31T08:00:04.000+00:00)" in line
    assert ".." not in line


def test_a_track_seen_while_the_person_was_out_of_view_can_still_be_them(tmp_path, encoder):
    # Track 1 is one person seen twice, 20 s apart (ingest re-identified them); track 2, in the same
    # video, is seen only in between: not in two places at once, so it stays a candidate.
    gallery = tmp_path / "gallery"
    records = camera_gallery(gallery, {("cam1.avi", 1): [("red", "blue")] * 4, ("cam1.avi", 2): [("red", "blue")] * 2},
                             {"cam1.avi": ("door", None)})
    times = {1: [0.1, 0.6, 20.1, 20.6], 2: [10.2, 10.7]}
    for track in (1, 2):
        for record, t in zip([r for r in records if r["track"] == track], times[track]):
            record["time"], record["frame"] = t, round(10 * t)
    build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=records)
    searcher = Searcher(tmp_path / "index", encoder=encoder)
    response = find_sightings(searcher, _crop(searcher, "cam1.avi", 1), k=5)
    assert [(r.role, r.sighting.track) for r in response.results] == [("source", 1), ("found", 2)]


def test_the_clip_of_a_person_who_came_back_shows_the_visit_of_the_sighting(tmp_path, encoder):
    import cv2

    gallery = tmp_path / "gallery"
    records = camera_gallery(gallery, {("cam1.avi", 1): [("red", "blue")] * 4}, {"cam1.avi": ("door", None)})
    for record, t in zip(records, [0.1, 0.2, 4.5, 4.6]):  # out of view for 4.3 s: two visits
        record["time"], record["frame"] = t, round(10 * t)
    write_video_for(gallery, "cam1.avi", frames=50)
    build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=records)
    searcher = Searcher(tmp_path / "index", encoder=encoder)
    add_sighting(searcher, "c", _crop(searcher, "cam1.avi", 1), "confirmed")  # its first crop, at 0.1 s
    data = export_case(searcher, "c", tmp_path / "export")
    clip = cv2.VideoCapture(str(tmp_path / "export" / data["sightings"][0]["clip"]))
    frames = clip.get(cv2.CAP_PROP_FRAME_COUNT)
    clip.release()
    assert frames == 13  # 0.1-0.2 s and 1 s either side, cut at the video's start; not on to 4.6 s
