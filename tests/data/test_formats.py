"""Annotation parsers: split statistics, label rules and clear errors, on fixtures built here."""

import json

import pytest

from partsearch.cli import main
from partsearch.data.formats import Record, format_stats_table, load_dataset
from partsearch.errors import DataError


def cuhk_entry(pid, split, n_captions=2, name=None):
    return {"split": split, "id": pid, "file_path": name or f"CUHK01/{pid}_{split}.jpg",
            "captions": [f"a person number {pid} caption {j}" for j in range(n_captions)],
            "processed_tokens": [["a", "person"]] * n_captions}


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def cuhk_root(tmp_path):
    entries = [cuhk_entry(1, "train"), cuhk_entry(1, "train", name="a.jpg"), cuhk_entry(2, "train"),
               cuhk_entry(3, "val"), cuhk_entry(4, "test", n_captions=3), cuhk_entry(5, "test")]
    write_json(tmp_path / "reid_raw.json", entries)
    return tmp_path


def test_cuhk_split_statistics(cuhk_root):
    stats = load_dataset("CUHK-PEDES", cuhk_root).stats()
    assert stats == {"train": {"ids": 2, "images": 3, "captions": 6},
                     "val": {"ids": 1, "images": 1, "captions": 2},
                     "test": {"ids": 2, "images": 2, "captions": 5}}


def test_cuhk_train_label_is_id_minus_one_and_test_keeps_raw_id(cuhk_root):
    splits = load_dataset("CUHK-PEDES", cuhk_root)
    assert [r.pid for r in splits.train] == [0, 0, 1]
    assert [r.pid for r in splits.test] == [4, 5]
    assert splits.split("val")[0] == Record("CUHK01/3_val.jpg", 3, ("a person number 3 caption 0",
                                                                    "a person number 3 caption 1"), "val")
    assert splits.image_root == cuhk_root / "imgs"


def test_non_contiguous_train_ids_name_the_file_and_first_gap(tmp_path):
    path = write_json(tmp_path / "reid_raw.json", [cuhk_entry(1, "train"), cuhk_entry(2, "train"),
                                                   cuhk_entry(4, "train"), cuhk_entry(9, "test")])
    with pytest.raises(DataError, match=rf"{path}.*contiguous.*label 2 is missing"):
        load_dataset("CUHK-PEDES", tmp_path)


def test_cuhk_ids_starting_at_zero_are_rejected(tmp_path):
    write_json(tmp_path / "reid_raw.json", [cuhk_entry(0, "train"), cuhk_entry(1, "train")])
    with pytest.raises(DataError, match="label 0 is missing"):
        load_dataset("CUHK-PEDES", tmp_path)


@pytest.mark.parametrize("filename", ["ICFG-PEDES.json", "ICFG_PEDES.json"])
def test_icfg_ids_from_zero_under_either_file_name(tmp_path, filename):
    write_json(tmp_path / filename, [cuhk_entry(0, "train"), cuhk_entry(1, "train", n_captions=1),
                                     cuhk_entry(7, "test", n_captions=1)])
    splits = load_dataset("ICFG-PEDES", tmp_path)
    assert [r.pid for r in splits.train] == [0, 1]
    assert splits.stats()["val"] == {"ids": 0, "images": 0, "captions": 0}
    assert splits.stats()["test"] == {"ids": 1, "images": 1, "captions": 1}


def test_icfg_has_no_val_split_and_says_how_models_are_selected(tmp_path):
    write_json(tmp_path / "ICFG-PEDES.json", [cuhk_entry(0, "train"), cuhk_entry(7, "test")])
    splits = load_dataset("ICFG-PEDES", tmp_path)
    with pytest.raises(DataError, match=r"no val split.*last epoch.*train\.eval_split=test"):
        splits.split("val")


def test_icfg_rejects_a_val_record(tmp_path):
    path = write_json(tmp_path / "ICFG-PEDES.json", [cuhk_entry(0, "train"), cuhk_entry(7, "val")])
    with pytest.raises(DataError, match=rf"{path}: record 1 has split 'val'.*train, test"):
        load_dataset("ICFG-PEDES", tmp_path)


def test_rstpreid_reads_img_path_and_ids_from_zero(tmp_path):
    entries = [{"id": i, "img_path": f"{i}_c1.jpg", "captions": ["one", "two"], "split": s}
               for i, s in [(0, "train"), (1, "train"), (2, "val"), (3, "test"), (3, "test")]]
    write_json(tmp_path / "data_captions.json", entries)
    splits = load_dataset("RSTPReid", tmp_path)
    assert [(r.image, r.pid) for r in splits.train] == [("0_c1.jpg", 0), ("1_c1.jpg", 1)]
    assert splits.stats()["test"] == {"ids": 1, "images": 2, "captions": 4}
    assert splits.split("val")[0].pid == 2


def test_jsonl_maps_string_ids_and_remaps_train_labels(tmp_path):
    lines = [{"image": "x.jpg", "id": "zoe", "captions": ["c"], "split": "train"},
             {"image": "y.jpg", "id": "adam", "captions": ["c", "d"], "split": "train"},
             {"image": "z.jpg", "id": "bob", "captions": ["c"], "split": "test"},
             {"image": "w.jpg", "id": "zoe", "captions": ["c"], "split": "train"}]
    (tmp_path / "annotations.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    splits = load_dataset("jsonl", tmp_path)
    assert [r.pid for r in splits.train] == [1, 0, 1]  # sorted ids: adam, bob, zoe
    assert [r.pid for r in splits.test] == [1]
    assert splits.stats()["train"] == {"ids": 2, "images": 3, "captions": 4}


def test_jsonl_integer_train_ids_become_contiguous(tmp_path):
    path = tmp_path / "custom.jsonl"
    path.write_text("\n".join(json.dumps({"image": f"{i}.jpg", "id": i, "captions": ["c"], "split": "train"})
                              for i in (10, 30, 20)))
    splits = load_dataset("jsonl", tmp_path, jsonl_file=path)
    assert [r.pid for r in splits.train] == [0, 2, 1]


def test_attributes_field_is_kept(tmp_path):
    entry = cuhk_entry(1, "train") | {"attributes": {"view": "back"}}
    write_json(tmp_path / "reid_raw.json", [entry])
    assert load_dataset("SynthPEDES", tmp_path).train[0].attributes == {"view": "back"}


def test_method_md_table_statistics(tmp_path):
    """The split sizes METHOD.md lists for CUHK-PEDES come out of a file of that shape."""
    shape = {"train": (11003, 34054, 68126), "val": (1000, 3078, 6158), "test": (1000, 3074, 6156)}
    entries, next_id = [], 1
    for split, (ids, images, captions) in shape.items():
        for k in range(images):
            n_captions = 2 + (k < captions - 2 * images)
            entries.append({"split": split, "id": next_id + k % ids, "file_path": f"{k}.jpg",
                            "captions": ["c"] * n_captions})
        next_id += ids
    write_json(tmp_path / "reid_raw.json", entries)
    stats = {s: (v["ids"], v["images"], v["captions"]) for s, v in load_dataset("CUHK-PEDES", tmp_path).stats().items()}
    assert stats == shape


def test_stats_table_lists_every_split():
    table = format_stats_table("X", {"train": {"ids": 3, "images": 5, "captions": 10},
                                     "val": {"ids": 0, "images": 0, "captions": 0},
                                     "test": {"ids": 1, "images": 2, "captions": 4}})
    assert "| train  | 3   | 5      | 10       |" in table
    assert "| test   | 1   | 2      | 4        |" in table


def test_data_stats_cli_json(cuhk_root, capsys):
    assert main(["data-stats", "--dataset", "CUHK-PEDES", "--root", str(cuhk_root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"] == {"ids": 2, "images": 2, "captions": 5}


def test_data_stats_cli_reports_icfg_val_as_zeros(tmp_path, capsys):
    write_json(tmp_path / "ICFG_PEDES.json", [cuhk_entry(0, "train"), cuhk_entry(7, "test")])
    assert main(["data-stats", "--dataset", "ICFG-PEDES", "--root", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["val"] == {"ids": 0, "images": 0, "captions": 0}


def test_data_stats_cli_table(cuhk_root, capsys):
    assert main(["data-stats", "--dataset", "CUHK-PEDES", "--root", str(cuhk_root)]) == 0
    assert "| val    | 1   | 1      | 2        |" in capsys.readouterr().out


def test_data_stats_check_images_names_the_bad_files(cuhk_root, capsys):
    from PIL import Image

    splits = load_dataset("CUHK-PEDES", cuhk_root)
    for record in splits.train + splits.val + splits.test:
        (splits.image_root / record.image).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 32)).save(splits.image_root / record.image, format="JPEG")
    assert main(["data-stats", "--dataset", "CUHK-PEDES", "--root", str(cuhk_root), "--check-images"]) == 0
    assert "checked 6 images" in capsys.readouterr().err
    (splits.image_root / "a.jpg").write_bytes(b"not a jpeg")
    assert main(["data-stats", "--dataset", "CUHK-PEDES", "--root", str(cuhk_root), "--check-images"]) == 2
    err = capsys.readouterr().err
    assert "1 of 6 images" in err and "a.jpg" in err and "skip_bad_images" in err


# ---------------------------------------------------------------- bad input


def test_missing_root_names_path_and_layout(tmp_path, capsys):
    root = tmp_path / "nowhere"
    assert main(["data-stats", "--dataset", "RSTPReid", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"dataset root not found: {root}" in err and "data_captions.json" in err


def test_missing_annotation_file_names_path_and_layout(tmp_path):
    with pytest.raises(DataError, match=rf"not found: {tmp_path / 'ICFG-PEDES.json'}.*ICFG_PEDES\.json.*imgs"):
        load_dataset("ICFG-PEDES", tmp_path)


def test_missing_jsonl_file_names_it(tmp_path):
    with pytest.raises(DataError, match=rf"not found: {tmp_path / 'annotations.jsonl'}"):
        load_dataset("jsonl", tmp_path)


def test_malformed_json_names_file_line_and_column(tmp_path):
    (tmp_path / "reid_raw.json").write_text('[\n  {"split": "train",\n   "id": }\n]')
    with pytest.raises(DataError, match=r"reid_raw\.json: malformed JSON at line 3, column 10"):
        load_dataset("CUHK-PEDES", tmp_path)


def test_malformed_jsonl_line_names_line(tmp_path):
    (tmp_path / "annotations.jsonl").write_text(
        json.dumps({"image": "a.jpg", "id": 1, "captions": ["c"], "split": "train"}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"annotations\.jsonl: malformed JSON at line 2"):
        load_dataset("jsonl", tmp_path)


def test_record_missing_field_names_index_and_field(tmp_path):
    entry = cuhk_entry(2, "train")
    del entry["file_path"]
    write_json(tmp_path / "reid_raw.json", [cuhk_entry(1, "train"), entry])
    with pytest.raises(DataError, match=r"record 1 has no field 'file_path'"):
        load_dataset("CUHK-PEDES", tmp_path)


def test_empty_caption_names_record_and_field(tmp_path):
    entry = cuhk_entry(1, "train") | {"captions": ["fine", "  "]}
    write_json(tmp_path / "reid_raw.json", [entry])
    with pytest.raises(DataError, match=r"record 0 field 'captions' has an empty caption at position 1"):
        load_dataset("CUHK-PEDES", tmp_path)


def test_jsonl_missing_field_names_line(tmp_path):
    (tmp_path / "annotations.jsonl").write_text(json.dumps({"image": "a.jpg", "captions": ["c"], "split": "train"}))
    with pytest.raises(DataError, match=r"record at line 1 has no field 'id'"):
        load_dataset("jsonl", tmp_path)


def test_wrong_split_name_lists_valid_ones(cuhk_root):
    with pytest.raises(DataError, match=r"unknown split 'dev'; valid splits are train, val, test"):
        load_dataset("CUHK-PEDES", cuhk_root).split("dev")


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'CUHK'.*CUHK-PEDES"):
        load_dataset("CUHK", tmp_path)


def test_loading_prints_the_statistics_table_to_stderr(cuhk_root, capsys):
    load_dataset("CUHK-PEDES", cuhk_root)
    captured = capsys.readouterr()
    assert "CUHK-PEDES statistics:" in captured.err and "| train  | 2   | 3      | 6        |" in captured.err
    assert captured.out == ""
