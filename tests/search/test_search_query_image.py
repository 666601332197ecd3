"""Query by image: an uploaded photo or an indexed image ("more like this") searches with its
own embeddings over the same levels; a text and an image together score
text_weight * s(v, t) + (1 - text_weight) * s(v, i)."""

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from search_fakes import CROPS, similarity

from partsearch.errors import QueryError
from partsearch.search.display import format_table
from partsearch.search.searcher import Searcher
from partsearch.search.service import create_app

LOCAL = "http://127.0.0.1"


def _id(searcher, relpath):
    return next(e.id for e in searcher.current().entries if e.path == relpath)


def test_more_like_this_ranks_by_the_image_to_image_similarity_and_leaves_the_image_out(index_dir, encoder):
    searcher = Searcher(index_dir, encoder=encoder)
    like = _id(searcher, "red_red.png")
    response = searcher.query(k=10, like=like)
    assert like not in [r.id for r in response.results] and len(response.results) == len(CROPS) - 1
    three = searcher.query(k=3, like=like).results  # k results, the image itself not among them
    assert [r.id for r in three] == [r.id for r in response.results[:3]]
    gen = searcher.current()
    row = gen.rows[like]
    arrays = gen.arrays
    images = type(arrays)(*(np.asarray(a[np.arange(len(gen.entries))], np.float32)
                            for a in (arrays.global_, arrays.coarse, arrays.fine, arrays.foreground)))
    query = images.take([row])
    expected = similarity(encoder, images, query)[0]
    for r in response.results:
        assert r.score == pytest.approx(expected[gen.rows[r.id]], abs=2e-3)  # float16 storage
    scores = [r.score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    assert response.image == {"id": like, "name": "red_red.png"} and response.match_threshold is None


def test_an_uploaded_photo_finds_the_same_crop_first_with_part_scores(index_dir, images_dir, encoder):
    searcher = Searcher(index_dir, encoder=encoder)
    data = (images_dir / "b/blue_blue.webp").read_bytes()
    response = searcher.query(k=3, image=data)
    first = response.results[0]
    assert first.relpath == "b/blue_blue.webp" and first.score == pytest.approx(3.0, abs=1e-2)
    assert len(first.parts["fine"]) == 3 and first.levels["fine"] == pytest.approx(1.0, abs=1e-2)
    assert response.image == {"upload": "upload"}


def test_text_and_image_score_the_weighted_sum_of_their_scores(index_dir, encoder):
    searcher = Searcher(index_dir, encoder=encoder)
    like = _id(searcher, "a/green_black.png")
    text = {r.id: r.score for r in searcher.query("red", k=10).results}
    image = {r.id: r.score for r in searcher.query(k=10, like=like).results}
    both = searcher.query("red", k=10, like=like, text_weight=0.25)
    for r in both.results:
        assert r.score == pytest.approx(0.25 * text[r.id] + 0.75 * image[r.id], abs=1e-4)
    assert both.text_weight == 0.25 and "text weight 0.25" in format_table(both)


def test_an_image_query_needs_one_image_and_a_weight_between_0_and_1(index_dir, encoder):
    searcher = Searcher(index_dir, encoder=encoder)
    with pytest.raises(QueryError, match="not both"):
        searcher.query(k=1, image=b"x", like=0)
    with pytest.raises(QueryError, match="text_weight"):
        searcher.query("red", k=1, like=0, text_weight=1.5)
    with pytest.raises(QueryError, match="photo"):
        searcher.query("  ", k=1)


def test_http_more_like_this_and_photo_upload(index_dir, images_dir, encoder):
    client = TestClient(create_app(Searcher(index_dir, encoder=encoder)), base_url=LOCAL)
    first = client.post("/api/search", json={"query": "red", "top_k": 1}).json()["results"][0]
    like = client.post("/api/search", json={"like": first["id"], "top_k": 2}).json()
    assert like["image"]["id"] == first["id"] and first["id"] not in [r["id"] for r in like["results"]]
    assert client.post("/api/search", json={"like": 999, "top_k": 2}).status_code == 404
    buffer = io.BytesIO()
    Image.open(images_dir / "yellow_green.png").save(buffer, format="PNG")
    found = client.post("/api/search/image", files={"file": ("me.png", buffer.getvalue(), "image/png")},
                        data={"top_k": "1", "query": ""}).json()
    assert found["results"][0]["relpath"] == "yellow_green.png" and found["image"] == {"upload": "me.png"}
    bad = client.post("/api/search/image", files={"file": ("x.png", b"not an image", "image/png")})
    assert bad.status_code == 400
