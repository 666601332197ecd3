"""Track-level search: an index over a `partsearch ingest` gallery keeps each crop's video record,
and Searcher, `partsearch search --tracks` and the service rank tracks by their crops' scores."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from search_fakes import make_crop, make_ingest_gallery, manifest_lines, write_video_for

from partsearch.errors import DataError, QueryError
from partsearch.search.display import format_track_table
from partsearch.search.index import build_index
from partsearch.search.searcher import Searcher
from partsearch.search.service import create_app
from partsearch.search.store import IndexStore
from partsearch.search.tracks import aggregate, visits
from partsearch.video.ingest import read_records

LOCAL = "http://127.0.0.1"
TRACKS = {  # (video, track) -> the colours of its crops, one per sampled frame
    ("cam1.avi", 1): [("red", "blue")] * 3,
    ("cam1.avi", 2): [("green", "black")] * 4,
    ("cam2.avi", 1): [("white", "red")] * 2,
    ("cam2.avi", 2): [("yellow", "green")] * 3,
}
# Track 1 matches "red" once, very well; track 2 matches it three times, less well.
SPLIT = {
    ("cam.avi", 1): [("red", "red"), ("black", "black"), ("black", "black")],
    ("cam.avi", 2): [("red", "blue")] * 3,
}


def _index(tmp_path, encoder, tracks, name="tracked"):
    gallery = tmp_path / "gallery"
    make_ingest_gallery(gallery, tracks)
    out = tmp_path / name
    build_index(encoder, gallery, out, progress=False, video_records=read_records(gallery))
    return gallery, out


def test_index_of_an_ingest_gallery_keeps_each_crops_video_record(tmp_path, encoder):
    gallery, out = _index(tmp_path, encoder, TRACKS)
    gen = IndexStore(out).load()
    assert all(e.video is not None for e in gen.entries)
    assert set(gen.tracks) == {("videos/cam1.avi", 1), ("videos/cam1.avi", 2), ("videos/cam2.avi", 1),
                               ("videos/cam2.avi", 2)}
    by_path = {e.path: e.video for e in gen.entries}
    for record in read_records(gallery):
        video = by_path[record["crop"]]
        assert (video.video, video.frame, video.time, list(video.box), video.track) == (
            record["video"], record["frame"], record["time"], record["box"], record["track"])


def test_the_track_whose_crops_match_the_query_comes_first(tmp_path, encoder):
    _, out = _index(tmp_path, encoder, TRACKS)
    results = Searcher(out, encoder=encoder).query_tracks("red top and blue trousers", k=4).results
    first = results[0]
    assert (first.video, first.track, first.crops) == ("videos/cam1.avi", 1, 3)
    assert first.best.relpath.startswith("crops/cam1_avi/t0001_")
    assert (first.start, first.end) == (0.1, 1.1)  # frames 1, 6, 11 at 10 frames/s
    assert first.best.box == [10, 20, 42, 84] and first.best.time == first.best.frame / 10
    assert [r.rank for r in results] == [1, 2, 3, 4]
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_a_tracks_max_score_is_its_best_crops_image_score(tmp_path, encoder):
    _, out = _index(tmp_path, encoder, TRACKS)
    searcher = Searcher(out, encoder=encoder)
    images = {r.id: r.score for r in searcher.search("white top", k=12)}
    for track in searcher.query_tracks("white top", k=4, aggregate="max").results:
        assert track.score == pytest.approx(images[track.best.id], abs=1e-5)
        assert track.best.score == pytest.approx(track.score, abs=1e-6)


def test_aggregate_max_is_the_best_crop_and_mean_top3_the_mean_of_the_three_best():
    scores = np.array([0.2, 0.9, 0.1, 0.5], np.float32)
    assert aggregate(scores, "max") == pytest.approx(0.9)
    assert aggregate(scores, "mean-top3") == pytest.approx((0.9 + 0.5 + 0.2) / 3)
    assert aggregate(np.array([0.4, 0.8]), "mean-top3") == pytest.approx(0.6)  # fewer crops: all of them
    with pytest.raises(ValueError, match="mean-top3"):
        aggregate(scores, "median")


def test_max_ranks_one_lucky_crop_first_and_mean_top3_a_consistent_track():
    lucky, consistent = np.array([0.95, 0.1, 0.1]), np.array([0.8, 0.8, 0.8])
    assert aggregate(lucky, "max") > aggregate(consistent, "max")
    assert aggregate(lucky, "mean-top3") < aggregate(consistent, "mean-top3")


def test_the_searcher_ranks_tracks_by_the_chosen_aggregate(tmp_path, encoder):
    _, out = _index(tmp_path, encoder, SPLIT)
    searcher = Searcher(out, encoder=encoder)
    assert searcher.query_tracks("red", k=2, aggregate="max").results[0].track == 1
    response = searcher.query_tracks("red", k=2, aggregate="mean-top3")
    assert response.aggregate == "mean-top3" and response.results[0].track == 2


def test_an_unknown_aggregate_is_a_query_error(tmp_path, encoder):
    _, out = _index(tmp_path, encoder, TRACKS)
    with pytest.raises(QueryError, match="max, mean-top3"):
        Searcher(out, encoder=encoder).query_tracks("red", aggregate="median")


def test_an_index_without_track_data_still_loads_and_searches(index_dir, encoder):
    assert {tuple(sorted(line)) for line in manifest_lines(index_dir)} == {("id", "path", "sha256", "size", "source")}
    searcher = Searcher(index_dir, encoder=encoder)
    assert searcher.current().tracks == {}
    assert searcher.search("red", k=3)[0].name.startswith("red_red")
    with pytest.raises(QueryError, match="holds no tracks"):
        searcher.query_tracks("red")


def test_reindexing_an_index_built_without_records_adds_the_tracks_without_embedding(tmp_path, encoder):
    gallery = tmp_path / "gallery"
    records = make_ingest_gallery(gallery, TRACKS)
    build_index(encoder, gallery, tmp_path / "index", progress=False)
    assert IndexStore(tmp_path / "index").load().tracks == {}
    report = build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=records)
    assert report.embedded == 0 and report.tracks == 4
    assert len(IndexStore(tmp_path / "index").load().tracks) == 4


def test_plain_images_beside_the_video_crops_belong_to_no_track(tmp_path, encoder):
    gallery = tmp_path / "gallery"
    records = make_ingest_gallery(gallery, TRACKS)
    make_crop(gallery / "stills" / "red_blue.png", "red", "blue")
    build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=records)
    searcher = Searcher(tmp_path / "index", encoder=encoder)
    still = next(e for e in searcher.current().entries if e.path == "stills/red_blue.png")
    assert still.video is None
    assert all(not r.best.relpath.startswith("stills") for r in searcher.query_tracks("red blue", k=4).results)


def test_records_of_a_gallery_that_holds_the_images_root_are_joined_relative_to_it(tmp_path, encoder):
    gallery = tmp_path / "gallery"
    records = make_ingest_gallery(gallery, TRACKS)
    build_index(encoder, gallery / "crops", tmp_path / "index", progress=False, video_records=records,
                gallery_dir=gallery)
    entry = next(e for e in IndexStore(tmp_path / "index").load().entries if e.path.startswith("cam1_avi/t0001"))
    assert entry.video.video == "../videos/cam1.avi" and entry.video.track == 1


def test_a_malformed_ingest_record_names_the_gallery(tmp_path, encoder):
    gallery = tmp_path / "gallery"
    records = make_ingest_gallery(gallery, TRACKS)
    records[0]["box"] = [1, 2, 3]
    with pytest.raises(DataError, match="gallery record 1: video field .box."):
        build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=records)


def test_the_track_table_names_video_span_and_best_crop(tmp_path, encoder):
    _, out = _index(tmp_path, encoder, TRACKS)
    table = format_track_table(Searcher(out, encoder=encoder).query_tracks("red blue", k=2))
    assert "videos/cam1.avi" in table and "0.10-1.10" in table and "frame 1" in table and "mean-top3" in table


def test_a_track_result_names_its_video_by_its_path_on_this_machine(tmp_path, encoder):
    gallery, out = _index(tmp_path, encoder, TRACKS)
    first = Searcher(out, encoder=encoder).query_tracks("red blue", k=1).results[0]
    assert first.video_path == str(gallery / "videos" / "cam1.avi")
    assert f"  {first.video_path}" in format_track_table(Searcher(out, encoder=encoder).query_tracks("red blue", k=1))


def test_the_service_returns_tracks_with_their_best_crop_and_frame(tmp_path, encoder):
    gallery, out = _index(tmp_path, encoder, TRACKS)
    write_video_for(gallery, "cam1.avi")
    client = TestClient(create_app(Searcher(out, encoder=encoder)), base_url=LOCAL)
    assert client.get("/healthz").json()["tracks"] == 4
    body = client.post("/api/search/tracks", json={"query": "red blue", "top_k": 2}).json()
    first = body["results"][0]
    assert body["aggregate"] == "mean-top3" and (first["video"], first["track"]) == ("cam1.avi", 1)
    assert "path" not in first["best"] and "video_path" not in first
    assert client.get(first["best"]["url"]).status_code == 200
    frame = client.get(first["best"]["frame_url"])
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    import cv2

    image = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (120, 160)
    assert abs(int(image[100, 150].mean()) - 5 * first["best"]["frame"]) <= 6  # the right frame, seeked
    x1, y1, _, _ = first["best"]["box"]
    assert image[y1 + 30, x1, 2] > 150  # the box is drawn (orange-yellow edge)


def test_the_service_refuses_tracks_of_an_index_without_them_and_bad_aggregates(tmp_path, index_dir, encoder):
    client = TestClient(create_app(Searcher(index_dir, encoder=encoder)), base_url=LOCAL)
    answer = client.post("/api/search/tracks", json={"query": "red"})
    assert answer.status_code == 422 and "holds no tracks" in answer.json()["detail"]
    _, out = _index(tmp_path, encoder, TRACKS)
    tracked = TestClient(create_app(Searcher(out, encoder=encoder)), base_url=LOCAL)
    assert tracked.post("/api/search/tracks", json={"query": "red", "aggregate": "x"}).status_code == 422


def test_the_frame_of_a_crop_whose_video_is_gone_or_of_a_plain_image_is_404(tmp_path, index_dir, encoder):
    _, out = _index(tmp_path, encoder, TRACKS)
    client = TestClient(create_app(Searcher(out, encoder=encoder)), base_url=LOCAL)
    answer = client.get("/api/images/0/frame")
    assert answer.status_code == 404 and "(cam1.avi) is no longer on disk" in answer.json()["detail"]
    plain = TestClient(create_app(Searcher(index_dir, encoder=encoder)), base_url=LOCAL)
    assert "not a crop of a video" in plain.get("/api/images/0/frame").json()["detail"]


def test_a_frame_scaled_to_a_width_keeps_its_aspect_and_draws_the_box_where_the_crop_is(tmp_path):
    import cv2

    from partsearch.search.tracks import VideoRecord, frame_with_box

    path = write_video_for(tmp_path, "cam.avi", frames=5, size=(160, 120))
    record = VideoRecord("videos/cam.avi", 2, 0.2, (40, 20, 80, 100), 1)
    image = cv2.imdecode(np.frombuffer(frame_with_box(path, record, width=80), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (60, 80)
    assert image[30, 20, 2] > 150 and image[30, 30, 2] < 60  # the left edge at x 40 / 2; inside it the grey of frame 2
    assert frame_with_box(path, record, width=320) == frame_with_box(path, record)  # never scaled up


def test_the_video_of_a_track_is_served_with_range_requests_for_seeking(tmp_path, encoder):
    gallery, out = _index(tmp_path, encoder, TRACKS)
    data = write_video_for(gallery, "cam1.avi").read_bytes()
    client = TestClient(create_app(Searcher(out, encoder=encoder)), base_url=LOCAL)
    best = client.post("/api/search/tracks", json={"query": "red blue", "top_k": 1}).json()["results"][0]["best"]
    assert best["video_type"] == "video/x-msvideo"
    whole = client.get(best["video_url"])
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    part = client.get(best["video_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(best["video_url"], headers={"Range": f"bytes={len(data) - 10}-"})
    assert tail.status_code == 206 and tail.content == data[-10:]


def test_the_video_of_an_unknown_id_a_plain_image_or_a_moved_video_is_a_clear_404(tmp_path, index_dir, encoder):
    _, out = _index(tmp_path, encoder, TRACKS)  # its videos were never written
    client = TestClient(create_app(Searcher(out, encoder=encoder)), base_url=LOCAL)
    unknown = client.get("/api/images/999/video")
    assert unknown.status_code == 404 and unknown.json()["detail"] == "no image with id '999' in this index"
    gone = client.get("/api/images/0/video")
    assert gone.status_code == 404 and "(cam1.avi) is no longer on disk" in gone.json()["detail"]
    plain = TestClient(create_app(Searcher(index_dir, encoder=encoder)), base_url=LOCAL)
    assert "not a crop of a video" in plain.get("/api/images/0/video").json()["detail"]
    assert client.get("/api/images/..%2F..%2Fetc%2Fpasswd/video").status_code == 404


def test_a_track_splits_into_visits_where_the_person_was_unseen_for_over_4_s():
    assert visits([0.0, 0.2, 4.2, 9.0, 9.2]) == [(0.0, 4.2), (9.0, 9.2)]
    assert visits([3.0]) == [(3.0, 3.0)]


def test_a_track_result_lists_the_visits_of_a_person_who_came_back(tmp_path, encoder):
    gallery = tmp_path / "gallery"
    records = make_ingest_gallery(gallery, {("cam.avi", 1): [("red", "blue")] * 4})
    for record, t in zip(records, [0.5, 1.0, 30.0, 30.5]):
        record["time"], record["frame"] = t, round(10 * t)
    build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=records)
    response = Searcher(tmp_path / "index", encoder=encoder).query_tracks("red top", k=1)
    assert response.results[0].visits == [(0.5, 1.0), (30.0, 30.5)]
    assert "2 visits (s): 0.50-1.00, 30.00-30.50" in format_track_table(response)
