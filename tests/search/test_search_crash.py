"""An indexer killed with SIGKILL mid-run leaves the previous index valid; the next run completes it."""

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from search_fakes import FakeEncoder, make_crop

from partsearch.errors import SearchIndexError
from partsearch.search.index import build_index
from partsearch.search.searcher import Searcher
from partsearch.search.store import IndexStore

SCRIPT = """
import sys, time
from search_fakes import FakeEncoder
from partsearch.search.index import build_index

def pause(batches):
    if batches == 1:  # after the first checkpointed batch: wait to be killed
        print("partsearch-index: paused", file=sys.stderr, flush=True)
        time.sleep(3600)

build_index(FakeEncoder(), sys.argv[1], sys.argv[2], batch_size=2, progress=False, on_batch=pause)
"""


class CountingEncoder(FakeEncoder):
    def __init__(self):
        super().__init__()
        self.embedded = 0

    def encode_images(self, images):
        self.embedded += len(images)
        return super().encode_images(images)


def _kill_after_first_batch(kill_at_pause, images_dir, index_dir):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    kill_at_pause([sys.executable, "-c", SCRIPT, str(images_dir), str(index_dir)], "partsearch-index: paused", env)


def test_killed_indexer_leaves_the_previous_index_valid_and_the_next_run_completes_it(tmp_path, index_dir, images_dir,
                                                                                      kill_at_pause):
    before = IndexStore(index_dir).current_name()
    colours = ["red", "green", "blue", "white", "black"]
    for i, colour in enumerate(colours):
        make_crop(images_dir / "new" / f"{i}.png", colour, colours[-1 - i])

    _kill_after_first_batch(kill_at_pause, images_dir, index_dir)

    assert IndexStore(index_dir).current_name() == before
    searcher = Searcher(index_dir, encoder=FakeEncoder())
    assert len(searcher) == 6 and len(searcher.search("red", 3)) == 3

    encoder = CountingEncoder()
    report = build_index(encoder, images_dir, index_dir, batch_size=2, progress=False)
    assert encoder.embedded == 3  # the first batch of 2 was checkpointed before the kill
    assert report.total == 11 and report.added == 5
    assert not (index_dir / "work").exists()
    assert len(Searcher(index_dir, encoder=FakeEncoder())) == 11


def test_leftover_partial_generation_is_ignored_and_cleaned(index_dir, images_dir, encoder):
    store = IndexStore(index_dir)
    before = store.current_name()
    (store.root / "gen-000099.json.partial").write_text("{")
    (store.segments_dir / ".seg-0123456789ab.partial").mkdir()
    (store.segments_dir / "seg-0123456789ab").mkdir()  # written, never named by a catalogue
    assert len(Searcher(index_dir, encoder=encoder)) == 6
    make_crop(images_dir / "extra.png", "black", "black")
    build_index(encoder, images_dir, index_dir, progress=False)
    assert sorted(p.name for p in store.root.glob("gen-*")) == [f"{before}.json", f"{store.current_name()}.json"]
    named = {s.name for s in store.load().segments}
    assert {p.name for p in store.segments_dir.iterdir()} == named and len(named) == 2


def _truncated_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, sha256=np.array(["x"]), folded=np.zeros((1, 4), np.float32))
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.mark.parametrize("name,content", [
    ("batch-000001.tmp.npz", _truncated_npz()),  # a temporary cut by kill -9 (older versions' name)
    ("batch-000001.npz", b""),
    ("batch-000001.npz", _truncated_npz()),
    ("batch-000001.npz", b"PK\x03\x04 not a zip"),
])
def test_unreadable_work_batch_counts_as_not_done(index_dir, images_dir, name, content):
    encoder = CountingEncoder()
    work = index_dir / "work" / encoder.fingerprint[:32]
    work.mkdir(parents=True)
    (work / name).write_bytes(content)
    make_crop(images_dir / "new.png", "black", "white")
    report = build_index(encoder, images_dir, index_dir, progress=False)
    assert encoder.embedded == 1 and report.total == 7
    assert not (index_dir / "work").exists()


def test_rerun_recovers_an_unreadable_generation_from_the_previous_one(index_dir, images_dir, capsys):
    make_crop(images_dir / "extra.png", "black", "black")
    build_index(FakeEncoder(), images_dir, index_dir, progress=False)
    store = IndexStore(index_dir)
    newest = store.load().segments[-1].name  # the segment holding extra.png
    (store.segments_dir / newest / "folded.npy").write_bytes(b"garbage")
    encoder = CountingEncoder()
    report = build_index(encoder, images_dir, index_dir, progress=False)
    assert encoder.embedded == 1 and report.total == 7  # only the image the previous generation lacked
    assert "recovering from the previous generation" in capsys.readouterr().err
    assert len(Searcher(index_dir, encoder=FakeEncoder())) == 7


def test_rerun_rebuilds_from_the_images_when_no_generation_is_readable(index_dir, images_dir):
    store = IndexStore(index_dir)
    store.catalogue_path(store.current_name()).write_text("{")
    encoder = CountingEncoder()
    assert build_index(encoder, images_dir, index_dir, progress=False).total == 6
    assert encoder.embedded == 6
    assert len(Searcher(index_dir, encoder=FakeEncoder())) == 6


def test_a_misspelled_index_factory_is_refused_before_embedding(tmp_path, images_dir):
    encoder = CountingEncoder()
    with pytest.raises(SearchIndexError, match="'Flaat' is not a FAISS index factory string"):
        build_index(encoder, images_dir, tmp_path / "index", index_factory="Flaat", progress=False)
    assert encoder.embedded == 0
