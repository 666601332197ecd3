"""The match threshold of a query (`partsearch.search.threshold`): the model's for plain crops, the
gallery's for footage, calibrated on the index's own scores for that query."""

import numpy as np
import pytest
from search_fakes import make_crop, make_ingest_gallery

from partsearch.search import threshold
from partsearch.search.index import build_index
from partsearch.search.searcher import Searcher
from partsearch.video.ingest import read_records

TRACKS = {  # one person in red among people in colours without red (white holds red light)
    ("cam1.avi", 1): [("red", "red")] * 3,
    ("cam1.avi", 2): [("green", "green")] * 4,
    ("cam2.avi", 1): [("blue", "blue")] * 4,
    ("cam2.avi", 2): [("blue", "green")] * 4,
    ("cam2.avi", 3): [("green", "blue")] * 4,
}


def test_the_gallery_threshold_is_the_median_plus_z_robust_sigmas():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 100.0])  # median 2, MAD 1: the outlier moves neither
    assert threshold.gallery_threshold(scores, z=2.0) == pytest.approx(2.0 + 2.0 * 1.4826)


def test_for_a_gallery_of_plain_crops_the_model_threshold_stands():
    gallery = np.eye(4, dtype=np.float32)
    assert threshold.for_query(gallery, range(4), gallery[0], 2.5, footage=False) == 2.5
    assert threshold.for_query(gallery, range(4), gallery[0], None, footage=False) is None


def test_for_footage_the_gallery_threshold_applies_whichever_side_the_models_is():
    gallery = np.eye(4, dtype=np.float32)  # the query scores 1, 0, 0, 0: median 0, MAD 0
    assert threshold.for_query(gallery, range(4), gallery[0], 2.5, footage=True) == pytest.approx(0.0)
    assert threshold.for_query(gallery, range(4), gallery[0], -1.0, footage=True) == pytest.approx(0.0)
    assert threshold.for_query(gallery, [], gallery[0], 2.5, footage=True) == 2.5


def test_a_large_gallery_is_sampled_evenly(monkeypatch):
    monkeypatch.setattr(threshold, "SAMPLE", 3)
    gallery = np.arange(10, dtype=np.float32)[:, None]  # scores 0..9 for a query of 1
    assert threshold.for_query(gallery, range(10), np.ones(1, np.float32), None, footage=True) == pytest.approx(
        threshold.gallery_threshold(np.array([0.0, 4.0, 9.0])))


def test_in_footage_the_described_track_passes_though_below_the_models_threshold(tmp_path, encoder, monkeypatch):
    monkeypatch.setattr(threshold, "for_run", lambda enc: 10.0)  # a threshold no score reaches
    make_ingest_gallery(tmp_path / "gallery", TRACKS)
    build_index(encoder, tmp_path / "gallery", tmp_path / "index", progress=False,
                video_records=read_records(tmp_path / "gallery"))
    response = Searcher(tmp_path / "index", encoder=encoder).query_tracks("a person in red", k=5)
    first, rest = response.results[0], response.results[1:]
    assert (first.video, first.track) == ("videos/cam1.avi", 1)
    assert first.best.score >= response.match_threshold > max(r.best.score for r in rest)


def test_a_gallery_of_plain_crops_keeps_the_models_threshold(tmp_path, encoder, monkeypatch):
    monkeypatch.setattr(threshold, "for_run", lambda enc: 10.0)
    for i, (top, bottom) in enumerate([("red", "blue"), ("green", "black"), ("white", "black")]):
        make_crop(tmp_path / "images" / f"{i}.png", top, bottom)
    build_index(encoder, tmp_path / "images", tmp_path / "index", progress=False)
    assert Searcher(tmp_path / "index", encoder=encoder).query("a red top", 3).match_threshold == 10.0


def test_the_answer_says_which_threshold_it_gives():
    assert threshold.rule(range(4), 2.5, footage=True) == "gallery"
    assert threshold.rule(range(4), 2.5, footage=False) == "model"
    assert threshold.rule([], 2.5, footage=True) == "model"  # no crops to calibrate on: the model's
    assert threshold.rule(range(4), None, footage=False) is None


def test_a_footage_answer_says_its_threshold_stands_out_from_the_gallery_and_a_crops_answer_the_models(
        tmp_path, encoder, monkeypatch):
    from partsearch.search.display import format_table, format_track_table

    monkeypatch.setattr(threshold, "for_run", lambda enc: 10.0)
    make_ingest_gallery(tmp_path / "gallery", TRACKS)
    build_index(encoder, tmp_path / "gallery", tmp_path / "footage", progress=False,
                video_records=read_records(tmp_path / "gallery"))
    footage = Searcher(tmp_path / "footage", encoder=encoder)
    tracks, crops = footage.query_tracks("a person in yellow", k=3), footage.query("a person in yellow", 3)
    assert tracks.match_rule == crops.match_rule == "gallery" and crops.to_dict()["match_rule"] == "gallery"
    for response, table in ((tracks, format_track_table), (crops, format_table)):
        response.match_threshold = 99.0  # nothing reaches it: the note says what it is
        assert "stands out from this gallery" in table(response) and "validation" not in table(response)
    make_crop(tmp_path / "images" / "a.png", "red", "blue")
    build_index(encoder, tmp_path / "images", tmp_path / "plain", progress=False)
    plain = Searcher(tmp_path / "plain", encoder=encoder).query("a red top", 3)
    assert plain.match_rule == "model" and plain.to_dict()["match_rule"] == "model"
