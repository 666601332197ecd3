"""The HTTP service under load (issue 13): many concurrent searches while uploads and deletes
happen, over real HTTP (uvicorn on a loopback port), through the load generator of
`benchmarks/service_load.py`. Short and without timings: the figures are the benchmark's."""

import io
import sys
from pathlib import Path

import pytest
from PIL import Image
from search_fakes import COLOURS

from partsearch.search.searcher import Searcher

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `benchmarks` is a top-level folder
from benchmarks.service_load import ServerThread, check_consistency, run_load  # noqa: E402

QUERIES = ["red", "blue", "green black", "white red", "yellow", "red blue"]
UPLOAD_COLOURS = ["red", "blue", "green", "white", "yellow", "black"]


def _upload(number: int) -> bytes:
    colour = UPLOAD_COLOURS[number % len(UPLOAD_COLOURS)]
    image = Image.new("RGB", (32, 64), tuple(int(255 * x) for x in COLOURS[colour]))
    image.putpixel((0, 0), (number % 256, number // 256 % 256, 1))  # distinct bytes for every upload
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def load_run(index_dir, encoder):
    searcher = Searcher(index_dir, encoder=encoder)
    with ServerThread(searcher) as server:
        result = run_load(server.url, QUERIES, seconds=3.0, clients=50, make_upload=_upload, write_pause=0.05)
        problems = check_consistency(server.url, QUERIES, result, 6, Searcher(index_dir, encoder=encoder))
    return result, problems


def test_fifty_clients_searching_during_uploads_and_deletes_get_no_errors(load_run):
    result, _ = load_run
    assert result.errors == []
    assert result.searches >= 50 and result.uploads >= 1


def test_after_the_load_the_service_agrees_with_a_fresh_searcher(load_run):
    result, problems = load_run
    assert problems == []
    assert result.deletes >= 1  # the check covered deleted images too
