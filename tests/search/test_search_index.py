"""The on-disk index: manifest, arrays, FAISS, incremental updates, model checks."""

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from search_fakes import CROPS, FakeEncoder, embeddings, make_crop, manifest_lines, similarity

from partsearch.errors import DataError, SearchIndexError, StorageError
from partsearch.data.images import ImageRejected, decode_image
from partsearch.search.index import build_index, scan_images
from partsearch.search.store import IndexStore
from partsearch.model.similarity import level_similarities, part_scores
from partsearch.search.searcher import Searcher, part_cosines


# Vectors are stored float16: a component of a unit vector is off by at most 2^-12, a score
# (a sum of 1 + N_c + P weighted cosines) by far less than this.
SCORE_TOL = 2e-3


def _manifest(index_dir):
    return manifest_lines(index_dir)


def test_index_records_every_image_relative_to_the_root(index_dir, images_dir):
    lines = _manifest(index_dir)
    assert sorted(e["path"] for e in lines) == sorted(CROPS)
    assert all(set(e) == {"id", "source", "path", "sha256", "size"} for e in lines)
    meta = IndexStore(index_dir).load().meta
    assert meta["images_root"] == "../images" and meta["images_root_absolute"] == str(images_dir.resolve())
    assert meta["fingerprint"] == "fake-model-1"


def test_index_copies_no_image(index_dir):
    assert not [p for p in index_dir.rglob("*") if p.suffix in (".jpg", ".png", ".webp", ".jpeg")]


def test_arrays_and_folded_vectors_match_the_encoder(index_dir, images_dir, encoder):
    from PIL import Image

    gen = IndexStore(index_dir).load()
    images = [Image.open(images_dir / e.path) for e in gen.entries]
    direct = encoder.encode_images(images)
    np.testing.assert_allclose(np.asarray(gen.folded, np.float32), encoder.fold_gallery(direct), atol=2.5e-4)
    np.testing.assert_allclose(np.asarray(gen.arrays.fine, np.float32), direct.fine, atol=2.5e-4)
    assert gen.arrays.foreground.shape == (len(CROPS), 8, 4)


def test_search_ranks_as_the_model_similarity(index_dir, images_dir, encoder):
    from PIL import Image

    searcher = Searcher(index_dir, encoder=encoder)
    gen = searcher.current()
    text, _ = encoder.encode_texts(["a person in red and blue"])
    sims = similarity(encoder, encoder.encode_images([Image.open(images_dir / e.path) for e in gen.entries]), text)[0]
    results = searcher.search("a person in red and blue", k=4)
    assert [r.id for r in results] == [gen.entries[i].id for i in np.argsort(-sims)[:4]]
    np.testing.assert_allclose([r.score for r in results], np.sort(sims)[::-1][:4], atol=SCORE_TOL)
    top = results[0]
    assert top.score == pytest.approx(top.levels["global"] + top.levels["coarse"] + top.levels["fine"], abs=1e-4)
    assert len(top.parts["coarse"]) == 2 and len(top.parts["fine"]) == 3


def test_a_results_part_cosines_are_the_models_part_scores(images_dir, encoder):
    images = encoder.encode_images([Image.open(images_dir / rel) for rel in sorted(CROPS)])
    text, _ = encoder.encode_texts(["a person in red and blue", "green"])
    rows = np.array([4, 1, 2])
    g, c, f = part_cosines(images, rows, text)
    as_torch = {name: part_scores(embeddings(images), embeddings(text))[name][0, rows] for name in ("coarse", "fine")}
    as_torch["global"] = level_similarities(embeddings(images), embeddings(text))["global"][0, rows]
    np.testing.assert_allclose(g, as_torch["global"].numpy(), atol=1e-6)
    np.testing.assert_allclose(c, as_torch["coarse"].numpy(), atol=1e-6)
    np.testing.assert_allclose(f, as_torch["fine"].numpy(), atol=1e-6)


def test_rerun_embeds_only_new_files_and_drops_deleted_ones(index_dir, images_dir, encoder):
    ids_before = {e["path"]: e["id"] for e in _manifest(index_dir)}
    (images_dir / "red_red.png").unlink()
    make_crop(images_dir / "new/black_white.png", "black", "white")
    report = build_index(encoder, images_dir, index_dir, progress=False)
    assert (report.added, report.removed, report.embedded) == (1, 1, 1)
    after = {e["path"]: e["id"] for e in _manifest(index_dir)}
    assert "red_red.png" not in after and "new/black_white.png" in after
    assert all(after[p] == i for p, i in ids_before.items() if p in after)
    assert after["new/black_white.png"] not in ids_before.values()


def test_rerun_without_changes_embeds_nothing(index_dir, images_dir, encoder):
    name = IndexStore(index_dir).current_name()
    report = build_index(encoder, images_dir, index_dir, progress=False)
    assert (report.added, report.removed, report.embedded) == (0, 0, 0)
    assert IndexStore(index_dir).current_name() == name


def test_moved_file_is_not_embedded_again(index_dir, images_dir, encoder):
    (images_dir / "red_red.png").rename(images_dir / "moved.png")
    report = build_index(encoder, images_dir, index_dir, progress=False)
    assert report.embedded == 0 and report.added == 1 and report.removed == 1


def test_unreadable_file_is_skipped_and_reported(tmp_path, images_dir, encoder):
    (images_dir / "broken.jpg").write_bytes(b"not a jpeg at all")
    report = build_index(encoder, images_dir, tmp_path / "idx", progress=False)
    assert report.skipped == ["broken.jpg"]
    assert report.total == len(CROPS)


def test_scan_is_recursive_and_ignores_other_files(images_dir):
    (images_dir / "notes.txt").write_text("x")
    (images_dir / "UPPER.PNG").write_bytes((images_dir / "red_red.png").read_bytes())
    assert sorted(scan_images(images_dir)) == sorted([*CROPS, "UPPER.PNG"])


def test_searching_with_another_model_is_a_search_index_error(index_dir):
    with pytest.raises(SearchIndexError, match="another|built with model"):
        Searcher(index_dir, encoder=FakeEncoder("other-model"))


def test_indexing_with_another_model_is_refused(index_dir, images_dir):
    with pytest.raises(SearchIndexError, match="new --out"):
        build_index(FakeEncoder("other-model"), images_dir, index_dir, progress=False)


def test_missing_index_is_a_clear_error(tmp_path, encoder):
    with pytest.raises(SearchIndexError, match="partsearch index"):
        Searcher(tmp_path / "nothing", encoder=encoder)


def test_missing_images_folder_is_a_data_error(tmp_path, encoder):
    with pytest.raises(DataError, match="no such folder"):
        build_index(encoder, tmp_path / "nope", tmp_path / "idx", progress=False)


def test_faiss_index_is_rebuilt_from_the_folded_vectors_when_missing(tmp_path, images_dir, encoder):
    build_index(encoder, images_dir, tmp_path / "index", index_factory="HNSW8", progress=False)
    store = IndexStore(tmp_path / "index")
    expected = [r.id for r in Searcher(store.root, encoder=encoder).search("green", 3)]
    (saved,) = store.segments_dir.glob("*/vectors.faiss")
    saved.unlink()
    assert [r.id for r in Searcher(store.root, encoder=encoder).search("green", 3)] == expected


def test_an_exact_index_keeps_no_second_copy_of_the_vectors(index_dir):
    # A Flat FAISS file would hold every vector again, as float32; it is built from folded.npy at load.
    assert not list(IndexStore(index_dir).segments_dir.glob("*/vectors.faiss"))


@pytest.mark.parametrize("factory", ["HNSW8", "IVF2,Flat", "PCA4,Flat"])
def test_approximate_factories_rerank_to_the_exact_order(tmp_path, images_dir, encoder, index_dir, factory):
    out = tmp_path / factory.replace(",", "_")
    build_index(encoder, images_dir, out, index_factory=factory, progress=False)
    exact = Searcher(index_dir, encoder=encoder).search("blue", 3)
    approx = Searcher(out, encoder=encoder).search("blue", 3)
    assert [r.id for r in approx] == [r.id for r in exact]
    np.testing.assert_allclose([r.score for r in approx], [r.score for r in exact], atol=1e-5)


def test_factory_that_cannot_fit_the_gallery_is_a_clear_error(tmp_path, images_dir, encoder):
    with pytest.raises(SearchIndexError, match="IVF1024"):
        build_index(encoder, images_dir, tmp_path / "idx", index_factory="IVF1024,Flat", progress=False)


def test_searcher_follows_a_generation_written_by_another_writer(index_dir, images_dir, encoder):
    searcher = Searcher(index_dir, encoder=encoder)
    make_crop(images_dir / "late/yellow_yellow.png", "yellow", "yellow")
    build_index(encoder, images_dir, index_dir, progress=False)
    assert len(searcher) == len(CROPS) + 1
    assert searcher.search("yellow", 1)[0].relpath == "late/yellow_yellow.png"


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_a_generation_is_one_clear_error_and_leaves_nothing(
        index_dir, images_dir, encoder, monkeypatch):
    store = IndexStore(index_dir)
    before = sorted(p.name for p in index_dir.iterdir())
    make_crop(images_dir / "extra.png", "black", "black")
    monkeypatch.setattr(np.memmap, "flush", _disk_full)
    with pytest.raises(StorageError, match=r"No space left on device.*free space"):
        build_index(encoder, images_dir, index_dir, progress=False)
    assert sorted(p.name for p in index_dir.iterdir() if p.name != "work") == before
    assert len(list(store.segments_dir.iterdir())) == 1 and store.load().meta["count"] == 6


def test_disk_full_while_checkpointing_a_batch_leaves_no_temporary_file(index_dir, images_dir, encoder, monkeypatch):
    make_crop(images_dir / "extra.png", "black", "black")
    monkeypatch.setattr(np, "savez", _disk_full)
    with pytest.raises(StorageError, match="embedded batch"):
        build_index(encoder, images_dir, index_dir, progress=False)
    assert [p for p in (index_dir / "work").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("file,edit,named", [
    ("manifest.jsonl", lambda e: dict(e, id="7"), "field 'id'"),
    ("manifest.jsonl", lambda e: {k: v for k, v in e.items() if k != "sha256"}, "expected the fields"),
    ("manifest.jsonl", lambda e: dict(e, path="../../outside.png"), "is not an indexed file"),
    ("catalogue", lambda m: {k: v for k, v in m.items() if k != "index_factory"}, "field 'index_factory'"),
    ("catalogue", lambda m: dict(m, next_id="12"), "field 'next_id'"),
    ("catalogue", lambda m: dict(m, segments=[dict(m["segments"][0], deleted=["3"])]), "deleted ids"),
])
def test_hand_edited_manifest_or_catalogue_is_a_clear_error_naming_the_file(index_dir, encoder, file, edit, named):
    store = IndexStore(index_dir)
    if file == "catalogue":
        path = store.catalogue_path(store.current_name())
    else:
        (segment,) = store.segments_dir.iterdir()
        path = segment / file
    if file == "catalogue":
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    else:
        lines = path.read_text().splitlines()
        path.write_text("\n".join([json.dumps(edit(json.loads(lines[0]))), *lines[1:]]) + "\n")
    with pytest.raises(SearchIndexError, match=named) as err:
        Searcher(index_dir, encoder=encoder)
    assert path.name in str(err.value)


def test_an_index_moved_with_its_images_reads_them_where_they_now_are(tmp_path, index_dir, images_dir, encoder):
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(index_dir, moved / "index")
    shutil.move(images_dir, moved / "images")
    searcher = Searcher(moved / "index", encoder=encoder)
    top = searcher.search("red", 1)[0]
    assert Path(top.path) == moved / "images" / top.relpath and Path(top.path).is_file()


def test_an_index_moved_alone_still_finds_its_images(tmp_path, index_dir, images_dir, encoder):
    shutil.move(index_dir, tmp_path / "deeper" / "index")
    top = Searcher(tmp_path / "deeper" / "index", encoder=encoder).search("red", 1)[0]
    assert Path(top.path) == images_dir.resolve() / top.relpath


def test_an_unreadable_image_is_named_by_its_file_not_by_a_memory_buffer():
    with pytest.raises(ImageRejected) as err:
        decode_image(b"this is no image", "a/broken.png")
    assert str(err.value).startswith("a/broken.png: not a readable") and "BytesIO" not in str(err.value)


def test_hidden_files_and_folders_are_not_indexed(images_dir):
    make_crop(images_dir / ".thumbnails" / "red_blue.jpg", "red", "blue")
    make_crop(images_dir / "a" / ".cache" / "x.png", "red", "blue")
    make_crop(images_dir / "a" / ".hidden.png", "red", "blue")
    assert scan_images(images_dir) == sorted(CROPS)


def test_searching_a_run_directory_says_to_build_an_index_from_it(tmp_path, encoder):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")
    with pytest.raises(SearchIndexError) as err:
        Searcher(run, encoder=encoder)
    assert "is a training run, not a search index" in str(err.value)
    assert f"--out {run.resolve()}" not in str(err.value) and "--out INDEX_DIR" in str(err.value)


def test_search_command_checks_top_k_before_loading_anything(tmp_path, capsys):
    from partsearch.cli import main

    assert main(["search", str(tmp_path / "no-index"), "red", "--top-k", "0"]) == 2
    assert "top_k=0 is out of range" in capsys.readouterr().err


def test_the_match_threshold_separates_matching_from_other_pairs_best():
    from partsearch.search.threshold import best_threshold

    scores = np.array([[0.9, 0.1], [0.3, 0.8]])
    matches = np.array([[True, False], [False, True]])
    assert best_threshold(scores, matches) == pytest.approx(0.55)


def test_a_measured_threshold_accepts_true_pairs_of_the_split(images_dir, encoder):
    from partsearch.data.formats import Record
    from partsearch.search.threshold import measure

    records = [Record(rel, pid, (f"{top} {bottom}",), "val") for pid, (rel, (top, bottom)) in enumerate(CROPS.items())]
    threshold = measure(encoder, records, images_dir, 10_000)
    folded = encoder.fold_gallery(encoder.encode_images([Image.open(images_dir / r.image) for r in records]))
    own = [float(encoder.fold_query(encoder.encode_texts([r.captions[0]])[0])[0] @ folded[i])
           for i, r in enumerate(records)]
    assert min(own) >= threshold


def test_search_answers_carry_the_score_range_and_the_indexs_match_threshold(tmp_path, images_dir, encoder,
                                                                            monkeypatch):
    from partsearch.search import threshold

    monkeypatch.setattr(threshold, "for_run", lambda enc: 1.5)
    build_index(encoder, images_dir, tmp_path / "index", progress=False)
    body = Searcher(tmp_path / "index", encoder=encoder).query("red", 2).to_dict()
    assert body["score_max"] == 3.0 and body["match_threshold"] == 1.5


def test_the_search_table_says_when_no_result_is_a_good_match(index_dir, encoder):
    from partsearch.search.display import format_table

    response = Searcher(index_dir, encoder=encoder).query("a person in a purple coat", 2)
    response.match_threshold = response.results[0].score + 0.1
    assert "no result is a good match" in format_table(response)
    response.match_threshold = response.results[0].score - 0.1
    assert "no result is a good match" not in format_table(response)


def test_an_unknown_image_id_is_a_search_index_error_naming_the_id(index_dir, encoder):
    from partsearch.errors import SearchIndexError

    searcher = Searcher(index_dir, encoder=encoder)
    with pytest.raises(SearchIndexError, match="no image with id 987654"):
        searcher.entry(987654)


def test_deleting_an_unknown_image_id_names_the_id(index_dir):
    from partsearch.errors import UnknownImage
    from partsearch.search.writes import delete_image

    with pytest.raises(UnknownImage, match="no image with id 987654"):
        delete_image(IndexStore(index_dir), 987654)


def test_the_build_report_says_which_vector_index_auto_chose(tmp_path, images_dir, encoder):
    report = build_index(encoder, images_dir, tmp_path / "idx", progress=False)
    assert "vector index: Flat: exact search" in report.summary()
    assert "chosen by auto for 6 images" in report.summary()
