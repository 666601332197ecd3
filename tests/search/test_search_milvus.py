"""MilvusIndex against a real milvus-lite gRPC server started by the test."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from partsearch.search.writes import delete_image
from partsearch.search.store import IndexStore
from partsearch.search.searcher import Searcher

pytestmark = pytest.mark.milvus
MILVUS_LITE = shutil.which("milvus-lite") or str(Path(sys.executable).with_name("milvus-lite"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    pytest.importorskip("pymilvus")
    if not Path(MILVUS_LITE).exists():
        pytest.skip("milvus-lite is not installed (pip install milvus-lite)")
    port = _free_port()
    data = tmp_path_factory.mktemp("milvus")
    proc = subprocess.Popen([MILVUS_LITE, "server", "--data-dir", str(data), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip(f"milvus-lite server did not start (exit {proc.poll()})")
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def milvus_index(milvus_uri, request):
    from partsearch.search.milvus import MilvusIndex

    index = MilvusIndex(milvus_uri, collection=f"t_{request.node.name[:40]}".replace("[", "_").replace("]", "_"))
    yield index
    index.drop()


def test_milvus_search_equals_the_exact_faiss_search(index_dir, encoder, milvus_index):
    local = Searcher(index_dir, encoder=encoder)
    remote = Searcher(index_dir, encoder=encoder, vector_index=milvus_index)
    assert len(milvus_index) == 6
    for query in ["red", "blue green", "white red"]:
        a, b = local.search(query, 4), remote.search(query, 4)
        assert [r.id for r in b] == [r.id for r in a]
        np.testing.assert_allclose([r.score for r in b], [r.score for r in a], atol=1e-5)


def test_first_stage_on_global_vectors_then_exact_rerank(milvus_index):
    # id 0 wins on the global vector alone, id 2 on the full similarity but is far on the global
    # one; with 2 candidates the first stage keeps {0, 1} and the exact re-rank picks 1.
    global_ = np.array([[1.0, 0.0], [0.9, 0.44], [0.0, 1.0]], np.float32)
    folded = np.array([[0.1, 0.0], [0.5, 0.0], [0.9, 0.0]], np.float32)
    milvus_index.add(np.array([0, 1, 2]), folded, global_)
    milvus_index.rerank_factor = 2
    scores, ids = milvus_index.search(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), k=1)
    assert ids.tolist() == [[1]] and scores[0, 0] == pytest.approx(0.5)
    milvus_index.rerank_factor = 3
    assert milvus_index.search(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), k=1)[1].tolist() == [[2]]


def test_milvus_collection_follows_index_changes(index_dir, encoder, milvus_index):
    remote = Searcher(index_dir, encoder=encoder, vector_index=milvus_index)
    entry = remote.current().entries[0]
    _, gen = delete_image(IndexStore(index_dir), entry.id)
    remote.set_generation(gen)
    assert milvus_index.ids() == {e.id for e in gen.entries}
    assert entry.id not in [r.id for r in remote.search("red", 10)]


def test_describe_reads_back_the_index_the_server_holds(milvus_index):
    assert milvus_index.describe() == {}
    milvus_index.add(np.array([0, 1]), np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32))
    described = milvus_index.describe()
    assert described["index_type"] == "HNSW" and described["metric_type"] == "IP"


def test_hnsw_search_breadth_is_raised_to_the_candidates_asked_for(milvus_index):
    # Milvus refuses an ef below the number of results; 3 candidates with ef 1 must still answer.
    milvus_index.search_params = {"ef": 1}
    milvus_index.rerank_factor = 3
    milvus_index.add(np.array([0, 1, 2]), np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32))
    _, ids = milvus_index.search(np.eye(3, dtype=np.float32)[:1], np.eye(3, dtype=np.float32)[:1], k=1)
    assert ids.tolist() == [[0]]
