"""Annotation parsers: CUHK-PEDES, ICFG-PEDES, RSTPReid, SynthPEDES and a generic JSONL format.

Every format is read into one list of `Record`s per split. Identity labels follow the code the
community evaluates with (IRRA, `datasets/cuhkpedes.py`, `icfgpedes.py`, `rstpreid.py`):

- CUHK-PEDES (and SynthPEDES, which uses its layout): ids start at 1; the train label is `id - 1`.
- ICFG-PEDES and RSTPReid: ids start at 0; the train label is the id as given.
- jsonl [ours]: ids may be integers or strings. String ids are mapped to integers by their rank in
  the sorted set of all ids of the file; train ids are then remapped to 0..N-1 in sorted order.

Train labels must be contiguous from 0 (they index the ID classifier); a gap is an error that
names the file and the first missing label. Val/test records keep their raw ids: evaluation only
compares ids within one split.

ICFG-PEDES has no val split. `DatasetSplits.split("val")` then raises a DataError; model
selection uses the last epoch, or `train.eval_split=test`, which reports are labelled as test
selection.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partsearch.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    """One image and its captions. `image` is relative to the image root; `pid` is the train label
    (contiguous from 0) on the train split and the raw dataset id on val/test. `attributes` holds
    the extra `attributes` field of an annotation (SynthPEDES writes one) and is None otherwise."""

    image: str
    pid: int
    captions: tuple[str, ...]
    split: str
    attributes: dict | None = field(default=None, compare=False)


@dataclass
class DatasetSplits:
    """The records of one dataset, per split. `val` is None for datasets without a val split."""

    name: str
    root: Path
    image_root: Path
    train: list[Record]
    val: list[Record] | None
    test: list[Record]
    annotation_file: Path | None = None

    def split(self, name: str) -> list[Record]:
        """The records of split `name`. ICFG-PEDES has no val split: asking for it raises a
        DataError saying that model selection then uses the last epoch, or `train.eval_split=test`
        (labelled as test selection)."""
        if name not in SPLITS:
            raise DataError(f"unknown split '{name}'; valid splits are {', '.join(SPLITS)}")
        records = getattr(self, name)
        if records is None:
            raise DataError(
                f"{self.name} has no {name} split; model selection then uses the last epoch, "
                "or set train.eval_split=test (reported as test selection)"
            )
        return records

    def stats(self) -> dict[str, dict[str, int]]:
        """`{"train": {"ids", "images", "captions"}, "val": ..., "test": ...}`; an absent split is zeros."""
        out = {}
        for name in SPLITS:
            records = getattr(self, name) or []
            out[name] = {
                "ids": len({r.pid for r in records}),
                "images": len(records),
                "captions": sum(len(r.captions) for r in records),
            }
        return out


def format_stats_table(name: str, stats: dict[str, dict[str, int]]) -> str:
    """The statistics table IRRA prints when it loads a dataset."""
    header = ("subset", "ids", "images", "captions")
    rows = [header] + [
        (split, str(s["ids"]), str(s["images"]), str(s["captions"])) for split, s in stats.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    body = [rule, line(header), rule] + [line(r) for r in rows[1:]] + [rule]
    return f"{name} statistics:\n" + "\n".join(body)


@dataclass(frozen=True)
class _Format:
    files: tuple[str, ...]  # accepted annotation file names, first is the usual one
    image_field: str
    splits: tuple[str, ...]
    id_offset: int  # train label = id - id_offset
    layout: str


_FORMATS = {
    "CUHK-PEDES": _Format(("reid_raw.json",), "file_path", SPLITS, 1,
                          "<root>/reid_raw.json and <root>/imgs/"),
    "SynthPEDES": _Format(("reid_raw.json",), "file_path", SPLITS, 1,
                          "<root>/reid_raw.json and <root>/imgs/ (make one with `partsearch synth`)"),
    "ICFG-PEDES": _Format(("ICFG-PEDES.json", "ICFG_PEDES.json"), "file_path", ("train", "test"), 0,
                          "<root>/ICFG-PEDES.json (or ICFG_PEDES.json) and <root>/imgs/"),
    "RSTPReid": _Format(("data_captions.json",), "img_path", SPLITS, 0,
                        "<root>/data_captions.json and <root>/imgs/"),
}
DATASETS = tuple(_FORMATS) + ("jsonl",)


def load_dataset(name: str, root: str | Path, jsonl_file: str | Path | None = None,
                 verbose: bool = True) -> DatasetSplits:
    """Read a dataset's annotations (not its images); with `verbose`, print IRRA's statistics
    table to stderr (stdout stays free for machine-readable output)."""
    root = Path(root)
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; valid names are {', '.join(DATASETS)}")
    if not root.is_dir():
        layout = _FORMATS[name].layout if name in _FORMATS else "<root>/annotations.jsonl and <root>/imgs/"
        raise DataError(f"dataset root not found: {root}; {name} expects {layout}")
    if name == "jsonl":
        splits = _load_jsonl(root, Path(jsonl_file) if jsonl_file else root / "annotations.jsonl")
    else:
        splits = _load_json_list(name, root, _FORMATS[name])
    if verbose:
        print(format_stats_table(name, splits.stats()), file=sys.stderr)
    return splits


def _annotation_file(name: str, root: Path, fmt: _Format) -> Path:
    for candidate in fmt.files:
        if (root / candidate).is_file():
            return root / candidate
    raise DataError(f"{name} annotation file not found: {root / fmt.files[0]}; {name} expects {fmt.layout}")


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None


def _require(entry: Any, where: str, fields: tuple[str, ...], path: Path) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: {where} is not an object")
    for name in fields:
        if name not in entry:
            raise DataError(f"{path}: {where} has no field '{name}'")


def _captions(value: Any, where: str, path: Path) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list) or not value:
        raise DataError(f"{path}: {where} field 'captions' must be a non-empty list of strings")
    for j, caption in enumerate(value):
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{path}: {where} field 'captions' has an empty caption at position {j}")
    return tuple(value)


def _int_id(value: Any, where: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{path}: {where} field 'id' must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}: {where} field 'id' must be an integer, got {value!r}") from None


def _split_name(value: Any, where: str, valid: tuple[str, ...], path: Path) -> str:
    if value not in valid:
        raise DataError(f"{path}: {where} has split {value!r}; this format's splits are {', '.join(valid)}")
    return value


def _check_contiguous(labels: set[int], path: Path, hint: str) -> None:
    for expected, label in enumerate(sorted(labels)):
        if label != expected:
            raise DataError(
                f"{path}: train labels must be contiguous from 0 ({hint}); label {expected} is missing "
                f"(the next one present is {label})"
            )


def _load_json_list(name: str, root: Path, fmt: _Format) -> DatasetSplits:
    path = _annotation_file(name, root, fmt)
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    fields = ("split", "captions", fmt.image_field, "id")
    by_split: dict[str, list[Record]] = {s: [] for s in fmt.splits}
    for i, entry in enumerate(data):
        where = f"record {i}"
        _require(entry, where, fields, path)
        split = _split_name(entry["split"], where, fmt.splits, path)
        raw_id = _int_id(entry["id"], where, path)
        pid = raw_id - fmt.id_offset if split == "train" else raw_id
        image = entry[fmt.image_field]
        if not isinstance(image, str) or not image:
            raise DataError(f"{path}: {where} field '{fmt.image_field}' must be a non-empty path")
        captions = _captions(entry["captions"], where, path)
        by_split[split].append(Record(image, pid, captions, split, entry.get("attributes")))
    hint = f"train label = id - {fmt.id_offset}" if fmt.id_offset else "train label = id"
    _check_contiguous({r.pid for r in by_split["train"]}, path, hint)
    return DatasetSplits(
        name=name,
        root=root,
        image_root=root / "imgs",
        train=by_split["train"],
        val=by_split.get("val") or None,
        test=by_split["test"],
        annotation_file=path,
    )


def _load_jsonl(root: Path, path: Path) -> DatasetSplits:
    if not path.is_file():
        raise DataError(
            f"jsonl annotation file not found: {path}; expected one JSON object per line, "
            '{"image": <path under <root>/imgs/>, "id": int|str, "captions": [...], "split": "train"|"val"|"test"}'
        )
    entries = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: malformed JSON at line {lineno}, column {err.colno}: {err.msg}") from None
            where = f"record at line {lineno}"
            _require(entry, where, ("image", "id", "captions", "split"), path)
            if isinstance(entry["id"], bool) or not isinstance(entry["id"], (int, str)):
                raise DataError(f"{path}: {where} field 'id' must be an integer or a string")
            _split_name(entry["split"], where, SPLITS, path)
            entries.append((where, entry))
    raw_ids = {e["id"] for _, e in entries}
    if all(isinstance(v, int) for v in raw_ids):
        numeric = {v: v for v in raw_ids}
    else:
        numeric = {v: rank for rank, v in enumerate(sorted(raw_ids, key=str))}
    train_ids = sorted({numeric[e["id"]] for _, e in entries if e["split"] == "train"})
    train_label = {v: label for label, v in enumerate(train_ids)}
    by_split: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for where, entry in entries:
        split = entry["split"]
        pid = numeric[entry["id"]]
        if split == "train":
            pid = train_label[pid]
        image = entry["image"]
        if not isinstance(image, str) or not image:
            raise DataError(f"{path}: {where} field 'image' must be a non-empty path")
        captions = _captions(entry["captions"], where, path)
        by_split[split].append(Record(image, pid, captions, split, entry.get("attributes")))
    return DatasetSplits(
        name="jsonl",
        root=root,
        image_root=root / "imgs",
        train=by_split["train"],
        val=by_split["val"] or None,
        test=by_split["test"],
        annotation_file=path,
    )
