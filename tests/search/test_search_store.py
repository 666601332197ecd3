"""The segmented store: one float16 copy of each vector, O(k) writes, deletes, compaction,
the older format."""

import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from search_fakes import COLOURS, CROPS, FakeEncoder, make_crop

from partsearch.errors import SearchIndexError
from partsearch.search import compaction
from partsearch.search.compaction import compact
from partsearch.search.index import build_index
from partsearch.search.searcher import Searcher
from partsearch.search.segments import RowStack, level_views
from partsearch.search.store import IndexStore
from partsearch.search.writes import add_image, delete_image


def _png(top="yellow", bottom="black") -> bytes:
    buffer = io.BytesIO()
    im = Image.new("RGB", (32, 64), tuple(int(255 * v) for v in COLOURS[bottom]))
    im.paste(tuple(int(255 * v) for v in COLOURS[top]), (0, 0, 32, 32))
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def _files(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


def _written(before: dict, after: dict) -> dict[str, int]:
    """Files new or changed since `before`, with their sizes."""
    return {name: info[2] for name, info in after.items() if before.get(name) != info}


def _ranking(index_dir, encoder, text="red", k=20):
    return [(r.id, round(r.score, 5)) for r in Searcher(index_dir, encoder=encoder).search(text, k)]


def test_each_vector_is_stored_once_as_float16_and_the_levels_are_views_of_it(index_dir):
    gen = IndexStore(index_dir).load()
    (segment,) = gen.segments
    assert sorted(p.name for p in (IndexStore(index_dir).segments_dir / segment.name).iterdir()) == [
        "folded.npy", "foreground.npy", "manifest.jsonl", "segment.json"]
    assert segment.folded.dtype == np.float16 and isinstance(segment.folded, np.memmap)
    for level in level_views(segment.folded, 4, 2, 3):
        assert np.shares_memory(level, segment.folded)
    assert gen.arrays.global_.shape == (6, 4) and gen.arrays.coarse.shape == (6, 2, 4)
    assert gen.arrays.fine.shape == (6, 3, 4)
    np.testing.assert_array_equal(gen.arrays.fine[2], np.asarray(segment.folded[2, 12:]).reshape(3, 4))


def test_row_stack_reads_the_live_rows_of_several_arrays_as_one():
    a, b = np.arange(12).reshape(6, 2), 100 + np.arange(8).reshape(4, 2)
    stack = RowStack([a, b], [np.array([0, 2, 5]), np.array([1, 3])])
    reference = np.concatenate([a[[0, 2, 5]], b[[1, 3]]])
    assert stack.shape == (5, 2) and len(stack) == 5
    np.testing.assert_array_equal(np.asarray(stack), reference)
    np.testing.assert_array_equal(stack[[4, 0, 3]], reference[[4, 0, 3]])
    np.testing.assert_array_equal(stack[1:4], reference[1:4])
    np.testing.assert_array_equal(stack[-1], reference[-1])
    np.testing.assert_array_equal(stack[np.array([True, False, True, False, True])], reference[[0, 2, 4]])
    np.testing.assert_array_equal(stack[[3, 1], 1], reference[[3, 1], 1])
    with pytest.raises(IndexError):
        stack[5]


def _grown(tmp_path, name, extra):
    """An index of the six crops plus `extra` more, in one segment."""
    images = tmp_path / f"{name}-images"
    for rel, (top, bottom) in CROPS.items():
        make_crop(images / rel, top, bottom)
    colours = ["red", "green", "blue", "white", "black", "yellow"]
    for i in range(extra):
        make_crop(images / "more" / f"{i}.png", colours[i % 6], colours[(i // 6) % 6])
    build_index(FakeEncoder(), images, tmp_path / name, progress=False)
    return tmp_path / name


def test_adding_or_deleting_an_image_writes_as_many_bytes_whatever_the_gallery_size(tmp_path):
    written = {}
    for name, extra in (("small", 0), ("large", 30)):
        out = _grown(tmp_path, name, extra)
        store = IndexStore(out)
        before = _files(out)
        entry, added, _ = add_image(store, FakeEncoder(), _png("yellow", "yellow"), "up.png")
        after_add = _files(out)
        assert added
        delete_image(store, entry.id)
        written[name] = (_written(before, after_add), _written(after_add, _files(out)))
        segment_files = {k for k in before if k.startswith("segments/")}
        assert all(_files(out).get(k) == before[k] for k in segment_files)  # no segment is ever rewritten
    for added, deleted in written.values():  # a delete writes a catalogue and CURRENT, nothing else
        assert len(deleted) == 2 and "CURRENT" in deleted and any(k.endswith(".json") for k in deleted)
    small, large = (sum(a.values()) for a, _ in written.values())
    assert abs(small - large) <= 16  # the catalogue's counts differ by a digit or so
    assert abs(sum(written["small"][1].values()) - sum(written["large"][1].values())) <= 16


def test_a_deleted_image_is_neither_found_nor_returned_by_compaction(index_dir, encoder):
    store = IndexStore(index_dir)
    victim = Searcher(index_dir, encoder=encoder).search("red", 1)[0].id
    delete_image(store, victim)
    assert victim not in [r.id for r in Searcher(index_dir, encoder=encoder).search("red", 10)]
    _, after = compact(index_dir)
    assert [len(s) for s in after.segments] == [5] and after.deleted == {}
    assert victim not in after.rows and victim not in {e["id"] for e in map(json.loads, (
        store.segments_dir / after.segments[0].name / "manifest.jsonl").read_text().splitlines())}


def test_compaction_merges_every_segment_and_keeps_the_ranking(index_dir, encoder, monkeypatch):
    monkeypatch.setattr(compaction, "MERGE_FACTOR", 100)
    store = IndexStore(index_dir)
    for top in ("yellow", "red", "blue"):
        add_image(store, encoder, _png(top), f"{top}.png")
    delete_image(store, store.load().entries[1].id)
    assert len(store.load().segments) == 4
    ranking = _ranking(index_dir, encoder)
    _, after = compact(index_dir)
    assert len(after.segments) == 1 and len(after.entries) == 8
    assert _ranking(index_dir, encoder) == ranking
    assert [p.name for p in store.segments_dir.iterdir()] != []
    assert {p.name for p in store.segments_dir.iterdir()} <= {after.segments[0].name, *(
        s.name for s in store.load(sorted(store.generations())[0]).segments)}


def test_compacting_an_index_of_one_clean_segment_writes_nothing(index_dir):
    before, after = compact(index_dir)
    assert after is before


def test_uploads_are_merged_by_tiers_of_similar_size(index_dir, encoder, monkeypatch):
    monkeypatch.setattr(compaction, "MERGE_FACTOR", 3)
    store = IndexStore(index_dir)
    add_image(store, encoder, _png("yellow"), "a.png")
    assert [len(s) for s in store.load().segments] == [6, 1]
    add_image(store, encoder, _png("red"), "b.png")  # three segments of under 10 rows: one merge
    assert [len(s) for s in store.load().segments] == [8]
    assert len(Searcher(index_dir, encoder=encoder)) == 8


def test_a_segment_with_half_its_rows_deleted_is_rewritten(index_dir):
    store = IndexStore(index_dir)
    for entry in store.load().entries[:3]:
        delete_image(store, entry.id)
    gen = store.load()
    assert [len(s) for s in gen.segments] == [3] and gen.deleted == {}


COMPACT_SCRIPT = """
import sys, time
from partsearch.search.compaction import compact

def pause(segment):
    print("partsearch-compact: paused", file=sys.stderr, flush=True)
    time.sleep(3600)

compact(sys.argv[1], on_written=pause)
"""


def test_a_compaction_killed_half_way_loses_nothing(index_dir, encoder, kill_at_pause, monkeypatch):
    monkeypatch.setattr(compaction, "MERGE_FACTOR", 100)
    store = IndexStore(index_dir)
    add_image(store, encoder, _png("yellow"), "a.png")
    delete_image(store, store.load().entries[0].id)
    before, ranking = store.current_name(), _ranking(index_dir, encoder)
    kill_at_pause([sys.executable, "-c", COMPACT_SCRIPT, str(index_dir)], "partsearch-compact: paused", dict(os.environ))
    assert store.current_name() == before and _ranking(index_dir, encoder) == ranking
    assert len(list(store.segments_dir.iterdir())) == 3  # the merged segment, written but never named
    _, after = compact(index_dir)
    assert _ranking(index_dir, encoder) == ranking
    assert {p.name for p in store.segments_dir.iterdir()} == {s.name for s in after.segments} | {
        s.name for s in store.load(before).segments}


def test_changing_the_index_factory_rewrites_every_image_into_one_segment(index_dir, images_dir, encoder):
    add_image(IndexStore(index_dir), encoder, _png("yellow"), "a.png")
    build_index(encoder, images_dir, index_dir, index_factory="HNSW8", progress=False)
    gen = IndexStore(index_dir).load()
    assert len(gen.segments) == 1 and len(gen.entries) == 7 and gen.meta["index_factory"] == "HNSW8"


def test_a_small_segment_of_an_ivf_index_is_searched_exactly(tmp_path, encoder):
    out = _grown(tmp_path, "ivf", 30)
    images = tmp_path / "ivf-images"
    build_index(encoder, images, out, index_factory="IVF2,Flat", progress=False)
    make_crop(images / "late.png", "yellow", "yellow")
    build_index(encoder, images, out, index_factory="IVF2,Flat", progress=False)
    store = IndexStore(out)
    assert [json.loads((store.segments_dir / s.name / "segment.json").read_text())["index_factory"]
            for s in store.load().segments] == ["IVF2,Flat", "Flat"]
    assert Searcher(out, encoder=encoder).search("yellow", 1)[0].relpath == "late.png"


def _legacy_index(root: Path, images_dir: Path, encoder) -> None:
    """An index as partsearch-index/1 wrote it: one generation folder holding every array."""
    gen = root / "gen-000001"
    gen.mkdir(parents=True)
    rels = sorted(CROPS)
    arrays = encoder.encode_images([Image.open(images_dir / rel) for rel in rels])
    meta = {"format": "partsearch-index/1", "fingerprint": encoder.fingerprint, "source": {},
            "images_root": os.path.relpath(images_dir, root), "images_root_absolute": str(images_dir),
            "index_factory": "Flat", "dim": 4, "num_coarse": 2, "num_fine": 3, "folded_dim": 24,
            "next_id": len(rels), "match_threshold": None, "count": len(rels), "generation": "gen-000001"}
    (gen / "meta.json").write_text(json.dumps(meta))
    (gen / "manifest.jsonl").write_text("".join(json.dumps(
        {"id": i, "source": "images", "path": rel, "sha256": hashlib.sha256((images_dir / rel).read_bytes()).hexdigest(),
         "size": (images_dir / rel).stat().st_size}) + "\n" for i, rel in enumerate(rels)))
    np.save(gen / "folded.npy", encoder.fold_gallery(arrays))
    for name in ("global_", "coarse", "fine"):
        np.save(gen / f"{name.rstrip('_')}.npy", getattr(arrays, name))
    np.save(gen / "foreground.npy", arrays.foreground.astype(np.float16))
    (root / "CURRENT").write_text("gen-000001\n")


def test_an_index_of_the_older_format_is_refused_by_search_with_the_command_that_converts_it(tmp_path, images_dir,
                                                                                             encoder):
    _legacy_index(tmp_path / "old", images_dir, encoder)
    with pytest.raises(SearchIndexError) as err:
        Searcher(tmp_path / "old", encoder=encoder)
    assert "partsearch-index/1" in str(err.value)
    assert f"partsearch index --compact --out {(tmp_path / 'old').resolve()}" in str(err.value)


def test_compact_converts_an_index_of_the_older_format_without_embedding(tmp_path, images_dir, index_dir, encoder,
                                                                           capsys):
    from partsearch.cli import main

    _legacy_index(tmp_path / "old", images_dir, encoder)
    assert main(["index", "--compact", "--out", str(tmp_path / "old")]) == 0
    assert "converted index" in capsys.readouterr().err
    assert not (tmp_path / "old" / "gen-000001").exists()
    assert _ranking(tmp_path / "old", encoder) == _ranking(index_dir, encoder)


def test_reindexing_an_index_of_the_older_format_converts_it(tmp_path, images_dir, encoder):
    class Counting(FakeEncoder):
        embedded = 0

        def encode_images(self, images):
            Counting.embedded += len(images)
            return super().encode_images(images)

    _legacy_index(tmp_path / "old", images_dir, encoder)
    make_crop(images_dir / "late.png", "yellow", "yellow")
    # the legacy index's factory (Flat): the new image becomes a second segment, the old rows one
    # converted segment (another factory, such as the default auto, rewrites them into one)
    report = build_index(Counting(), images_dir, tmp_path / "old", index_factory="Flat", progress=False)
    assert Counting.embedded == 1 and report.total == 7 and report.added == 1
    assert len(IndexStore(tmp_path / "old").load().segments) == 2


def test_index_command_without_images_or_compact_names_what_is_missing(tmp_path, capsys):
    from partsearch.cli import main

    assert main(["index", "--out", str(tmp_path / "idx")]) == 2
    assert "--compact" in capsys.readouterr().err
