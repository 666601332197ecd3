"""Filters inside the search (camera, video, track, time, minimum score): applied in the index,
so a filtered search returns k results whenever k images pass."""

import numpy as np
import pytest
from fastapi.testclient import TestClient
from search_fakes import camera_gallery

from partsearch.errors import QueryError
from partsearch.search import vectors
from partsearch.search.display import format_table
from partsearch.search.filters import Filters, camera_matches, parse_bound
from partsearch.search.index import build_index
from partsearch.search.searcher import Searcher
from partsearch.search.service import create_app
from partsearch.search.vectors import FaissIndex, exact_search

LOCAL = "http://127.0.0.1"
# cam1 holds mostly red people, cam2 one: an unfiltered "red" search is all cam1.
TRACKS = {
    ("cam1.avi", 1): [("red", "red")] * 4,
    ("cam1.avi", 2): [("red", "blue")] * 4,
    ("cam2.avi", 1): [("red", "black")] * 1,
    ("cam2.avi", 2): [("green", "green")] * 3,
    ("cam3.avi", 1): [("blue", "blue")] * 2,
}
CAMERAS = {"cam1.avi": ("cam1", "2026-01-31T13:59:59+00:00"), "cam2.avi": ("camera-2", "2026-01-31T14:00:00+00:00"),
           "cam3.avi": ("yard", None)}


@pytest.fixture
def searcher(tmp_path, encoder):
    gallery = tmp_path / "gallery"
    records = camera_gallery(gallery, TRACKS, CAMERAS)
    build_index(encoder, gallery, tmp_path / "index", progress=False, video_records=records)
    return Searcher(tmp_path / "index", encoder=encoder)


def test_a_camera_filter_returns_k_results_from_that_camera_only(searcher):
    unfiltered = searcher.search("red", k=4)
    assert {r.video["camera"] for r in unfiltered} == {"cam1"}
    results = searcher.query("red", k=4, filters=Filters(cameras=("camera-2",))).results
    assert len(results) == 4 and {r.video["camera"] for r in results} == {"camera-2"}
    assert results[0].video["track"] == 1  # the red one first


def test_a_number_names_the_camera_that_ends_in_it():
    assert camera_matches("2", "camera-2") and camera_matches("2", "cam2") and camera_matches("CAM2", "cam2")
    assert not camera_matches("2", "cam12") and not camera_matches("2", "yard")


def test_video_and_track_filters_keep_one_person(searcher):
    results = searcher.query("green", k=10, filters=Filters(videos=("cam1.avi",), tracks=(2,))).results
    assert len(results) == 4 and {(r.video["video"], r.video["track"]) for r in results} == {("videos/cam1.avi", 2)}


def test_a_time_of_day_uses_wall_clock_where_known_and_video_time_elsewhere(searcher):
    # cam1 starts at 13:59:59: its crops at 0.1-1.6 s are 13:59:59.1-14:00:00.6; cam2 starts at
    # 14:00; cam3 has no start, so its times (0.1-0.6 s) count from 0:00:00.
    after = searcher.query("red", k=50, filters=Filters(after="14:00")).results
    assert {r.video["camera"] for r in after} == {"cam1", "camera-2"}
    assert all(r.video["wall_time"] >= "2026-01-31T14:00:00" for r in after)
    early = searcher.query("blue", k=50, filters=Filters(before="0:00:01")).results
    assert {r.video["camera"] for r in early} == {"yard"}


def test_a_date_and_time_passes_only_crops_with_a_wall_clock(searcher):
    results = searcher.query("blue", k=50, filters=Filters(after="2026-01-31T00:00:00+00:00")).results
    assert results and "yard" not in {r.video["camera"] for r in results}


def test_min_score_cuts_the_ranked_list(searcher):
    all_scores = [r.score for r in searcher.search("red", k=14)]
    cut = searcher.query("red", k=14, filters=Filters(min_score=all_scores[3])).results
    assert [r.score for r in cut] == all_scores[:len(cut)] and len(cut) >= 4
    assert min(r.score for r in cut) >= all_scores[3]


def test_a_time_that_is_not_one_is_named():
    with pytest.raises(QueryError, match="after 'noon'"):
        Filters(after="noon")
    assert parse_bound("14:30", "after").value == 14 * 3600 + 30 * 60
    assert parse_bound("2026-01-31T14:00", "after").kind == "local"


def test_filters_are_echoed_and_shown(searcher):
    response = searcher.query("red", k=2, filters=Filters(cameras=("2",), after="14:00"))
    assert response.to_dict()["filters"]["cameras"] == ["2"]
    assert "filters: camera 2, after 14:00" in format_table(response)


def test_http_search_takes_filters_and_names_a_bad_one(searcher):
    client = TestClient(create_app(searcher), base_url=LOCAL)
    body = client.post("/api/search", json={"query": "red", "top_k": 3, "filters": {"cameras": ["yard"]}}).json()
    assert [r["video"]["camera"] for r in body["results"]] == ["yard", "yard"]
    bad = client.post("/api/search", json={"query": "red", "filters": {"camera": "yard"}})
    assert bad.status_code == 422 and "camera" in bad.json()["detail"]


def _vectors(n=3000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float16), rng.standard_normal((4, d)).astype(np.float32)


def test_an_approximate_index_searches_only_the_allowed_rows_and_matches_exact(monkeypatch):
    monkeypatch.setattr(vectors, "FILTER_EXACT_MAX", 100)  # so 1,500 allowed rows take the selector path
    folded, query = _vectors()
    index = FaissIndex.build(folded, np.arange(len(folded)) + 1000, "IVF8,Flat")
    index.index.nprobe = 8  # every list: the first stage is exact, so the result must be
    rows = np.arange(0, len(folded), 2)
    scores, ids = index.search(query, None, 10, rows=rows)
    want_scores, want_rows = exact_search(folded, query, 10, rows)
    assert (ids == want_rows + 1000).all()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_a_filter_the_probed_lists_miss_still_returns_k(monkeypatch):
    monkeypatch.setattr(vectors, "FILTER_EXACT_MAX", 10)
    folded, query = _vectors()
    index = FaissIndex.build(folded, np.arange(len(folded)), "IVF64,Flat")
    index.index.nprobe = 1
    rows = np.arange(0, len(folded), 97)  # 31 rows, spread over lists one probe mostly misses
    scores, ids = index.search(query, None, 20, rows=rows)
    assert (ids >= 0).sum(axis=1).tolist() == [20] * 4
    assert set(ids.ravel()) <= set(rows)


def test_segments_search_only_their_allowed_rows(tmp_path, encoder, searcher):
    gen = searcher.current()
    mask = np.zeros(len(gen.entries), bool)
    mask[[1, 5]] = True
    scores, ids = gen.vectors.search(encoder.fold_query(encoder.encode_texts(["red"])[0]), None, 10,
                                     rows=gen.segment_rows(mask))
    assert sorted(ids[0][ids[0] >= 0]) == sorted(gen.entries[i].id for i in (1, 5))


def test_query_words_become_filters_and_are_reported():
    from partsearch.search.querywords import parse_words

    parsed = parse_words("a man in a red coat on camera 2 after 14:00")
    assert parsed.text == "a man in a red coat"
    assert (parsed.filters.cameras, parsed.filters.after) == (("2",), "14:00")
    assert {p["words"] for p in parsed.parts} == {"on camera 2", "after 14:00"}


@pytest.mark.parametrize("query, cameras, after, before", [
    ("a woman between 9am and 10:30 am on cam door", ("door",), "09:00", "10:30"),
    ("cameras 2, 3 and 4 since 2 pm a woman", ("2", "3", "4"), "14:00", None),
    ("a person before 2026-01-31 08:00", (), None, "2026-01-31T08:00"),
])
def test_the_grammar_reads_times_and_camera_lists(query, cameras, after, before):
    from partsearch.search.querywords import parse_words

    f = parse_words(query).filters
    assert (f.cameras, f.after, f.before) == (cameras, after, before)


@pytest.mark.parametrize("query", ["a man near the camera in a red coat", "after 3 people in a red coat",
                                   "a woman with a bag"])
def test_words_that_are_not_filter_phrases_stay_text(query):
    from partsearch.search.querywords import parse_words

    parsed = parse_words(query)
    assert parsed.text == query and parsed.parts == [] and not parsed.filters


def test_a_search_takes_filters_from_its_words_unless_literal(searcher):
    response = searcher.query("red on camera 2", k=10)
    assert response.query == "red" and {r.video["camera"] for r in response.results} == {"camera-2"}
    assert "understood: 'on camera 2' as camera 2" in format_table(response)
    assert searcher.query("red on camera 2", k=10, words=False).parsed == []
    with pytest.raises(QueryError, match="only filters"):
        searcher.query("on camera 2", k=3)


def test_a_track_search_keeps_only_the_crops_that_pass_and_reads_filter_words(searcher):
    tracks = searcher.query_tracks("red on camera 2", k=10)
    assert {(r.camera, r.video) for r in tracks.results} == {("camera-2", "videos/cam2.avi")}
    assert tracks.parsed[0]["means"] == "camera 2"
    # cam1 starts at 13:59:59: only each track's first crop (at 0.1 s or 0.2 s) is before 13:59:59.4
    early = searcher.query_tracks("red", k=10, filters=Filters(videos=("cam1.avi",), before="13:59:59.4"))
    assert {r.crops for r in early.results} == {1} and all(r.end <= 0.4 for r in early.results)
    assert searcher.query_tracks("red", k=10, filters=Filters(min_score=10.0)).results == []
