"""The generation store of an index directory: reading and atomically writing complete
generations, the CURRENT pointer (swapped with os.replace, fsynced), recovery from an unreadable
generation, and the writers' lock. The layout is described in `partsearch.search.index`
(and docs/SEARCH.md); the build pipeline that fills a store is there too.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from partsearch.errors import SearchIndexError, StorageError
from partsearch.search.encoder import Encoder, GalleryArrays
from partsearch.search.tracks import VideoRecord, group_tracks
from partsearch.search.vectors import FaissIndex

FORMAT = "partsearch-index/1"
SOURCES = ("images", "uploads")
_GEN_NAME = re.compile(r"gen-[0-9]{6}")


@dataclass(frozen=True)
class Entry:
    """One manifest line. `video` is where a crop of a `partsearch ingest` gallery was seen (its
    track among them); None for plain images and uploads, and absent from their lines."""

    id: int
    source: str
    path: str
    sha256: str
    size: int
    video: VideoRecord | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_json(self) -> str:
        values = {"id": self.id, "source": self.source, "path": self.path, "sha256": self.sha256, "size": self.size}
        if self.video is not None:
            values["video"] = self.video.to_dict()
        return json.dumps(values)


@dataclass
class Generation:
    """One complete, immutable generation of an index, loaded."""

    name: str
    meta: dict
    entries: list[Entry]
    arrays: GalleryArrays
    folded: np.ndarray
    vectors: FaissIndex
    rows: dict[int, int] = field(default_factory=dict)
    tracks: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # (video, track) -> rows

    def __post_init__(self):
        self.rows = {e.id: i for i, e in enumerate(self.entries)}
        self.tracks = group_tracks([e.video for e in self.entries])

    def reuse_by_sha(self) -> dict[str, int]:
        return {e.sha256: i for i, e in enumerate(self.entries)}


class IndexStore:
    """Reads and atomically writes the generations of one index directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.uploads = self.root / "uploads"

    @property
    def current_file(self) -> Path:
        return self.root / "CURRENT"

    def exists(self) -> bool:
        return self.current_file.is_file()

    def current_name(self) -> str:
        try:
            return self.current_file.read_text().strip()
        except FileNotFoundError:
            if any((self.root / name).is_file() for name in ("best.pt", "last.pt")):
                raise SearchIndexError(
                    f"{self.root} is a training run, not a search index; build an index with this run "
                    f"(`partsearch index {self.root} --images DIR --out INDEX_DIR`) and search INDEX_DIR"
                ) from None
            raise SearchIndexError(
                f"{self.root} is not a search index (no CURRENT file); build one with "
                f"`partsearch index RUN_DIR --images DIR --out {self.root}`"
            ) from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes, so an indexer and a server never write at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def locate(self, meta: dict, key: str, section: dict | None = None) -> Path | None:
        """A path the index records (`images_root`, or `run_dir` / `checkpoint` of `source`),
        None when it records none. Paths are kept relative to the index directory, with the
        absolute path beside them (`<key>_absolute`): the relative one is used when it exists
        (index and files moved together), else the absolute one (the index moved alone)."""
        values = meta if section is None else section
        relative, absolute = values.get(key) or "", values.get(f"{key}_absolute") or ""
        candidates = [Path(os.path.normpath(self.root / p)) for p in (relative, absolute) if p]
        for path in candidates:
            if path.exists():
                return path
        return candidates[0] if candidates else None

    def images_root(self, meta: dict) -> Path:
        return self.locate(meta, "images_root")

    def run_source(self, meta: dict) -> tuple[Path | None, Path | None]:
        """(run directory, checkpoint) of the model the index was built with."""
        source = meta.get("source", {})
        return self.locate(meta, "run_dir", source), self.locate(meta, "checkpoint", source)

    def image_path(self, meta: dict, entry: Entry) -> Path:
        base = self.images_root(meta) if entry.source == "images" else self.uploads
        return base / entry.path

    def load(self, name: str | None = None) -> Generation:
        name = name or self.current_name()
        gen = self.root / name
        try:
            meta = _parse_meta(json.loads((gen / "meta.json").read_text()), gen / "meta.json")
            manifest = gen / "manifest.jsonl"
            entries = [_parse_entry(line, manifest, number)
                       for number, line in enumerate(manifest.read_text().splitlines(), start=1) if line]
            if len({e.id for e in entries}) != len(entries):
                raise ValueError(f"{manifest}: an id appears twice")
            arrays = GalleryArrays(
                *(np.load(gen / f"{n}.npy", mmap_mode="r") for n in ("global", "coarse", "fine", "foreground"))
            )
            folded = np.load(gen / "folded.npy")
        except SearchIndexError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SearchIndexError(
                f"index generation {gen} is unreadable ({err}); re-run `partsearch index` with the same --images "
                f"and --out {self.root} to recover it"
            ) from None
        if not (len(entries) == len(arrays) == len(folded)):
            raise SearchIndexError(f"{gen}: manifest has {len(entries)} images but the arrays {len(folded)}; re-run `partsearch index`")
        ids = np.array([e.id for e in entries], dtype=np.int64)
        vectors = FaissIndex.load(gen / "vectors.faiss", folded, ids, meta["index_factory"])
        return Generation(name, meta, entries, arrays, folded, vectors)

    def generations(self) -> list[str]:
        """Names of the complete generations on disk, newest first."""
        return sorted((p.name for p in self.root.glob("gen-*") if _GEN_NAME.fullmatch(p.name) and p.is_dir()),
                      reverse=True)

    def load_for_update(self) -> Generation | None:
        """The live generation for a writer; when it is unreadable, the newest readable older one
        (a warning says which), or None (build from the images again) when there is none."""
        if not self.exists():
            return None
        try:
            return self.load()
        except SearchIndexError as err:
            problem = str(err)
        broken = self.current_file.read_text().strip()
        for name in self.generations():
            if name == broken:
                continue
            try:
                gen = self.load(name)
            except SearchIndexError:
                continue
            print(f"warning: {problem}; recovering from the previous generation {name}", file=sys.stderr)
            return gen
        print(f"warning: {problem}; no readable earlier generation, indexing the images again", file=sys.stderr)
        return None

    def _next_name(self) -> str:
        numbers = [int(p.name.split("-")[1].split(".")[0]) for p in self.root.glob("gen-*") if p.name[4:10].isdigit()]
        return f"gen-{max(numbers, default=0) + 1:06d}"

    def write(self, meta: dict, entries: list[Entry], arrays: GalleryArrays, folded: np.ndarray,
              previous: str | None = None) -> Generation:
        """Write a complete new generation and make it live (caller holds `lock`). The generation
        it was made from, `previous`, is kept beside it, so an unreadable live generation can be
        recovered by the next writer (`load_for_update`); older ones are removed."""
        name = self._next_name()
        partial = self.root / f"{name}.partial"
        meta = dict(meta, count=len(entries), generation=name,
                    written=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        folded = np.ascontiguousarray(folded, dtype=np.float32)
        ids = np.array([e.id for e in entries], dtype=np.int64)
        vectors = FaissIndex.build(folded, ids, meta["index_factory"])
        tmp = self.root / "CURRENT.tmp"
        swapped = False
        try:
            with storage(f"index generation {partial}"):
                partial.mkdir(parents=True)
                (partial / "meta.json").write_text(json.dumps(meta, indent=1))
                (partial / "manifest.jsonl").write_text("".join(e.to_json() + "\n" for e in entries))
                np.save(partial / "folded.npy", folded)
                np.save(partial / "global.npy", np.asarray(arrays.global_, np.float32))
                np.save(partial / "coarse.npy", np.asarray(arrays.coarse, np.float32))
                np.save(partial / "fine.npy", np.asarray(arrays.fine, np.float32))
                np.save(partial / "foreground.npy", np.asarray(arrays.foreground, np.float16))
                try:
                    vectors.save(partial / "vectors.faiss")
                except RuntimeError as err:  # FAISS reports a failed write this way
                    raise OSError(f"FAISS could not write vectors.faiss ({str(err).strip().splitlines()[-1]})") from None
                for path in partial.iterdir():
                    _fsync(path)
                os.rename(partial, self.root / name)
                _fsync(self.root)
                tmp.write_text(name + "\n")
                _fsync(tmp)
                os.replace(tmp, self.current_file)
                swapped = True
                _fsync(self.root)
        except BaseException:
            tmp.unlink(missing_ok=True)
            shutil.rmtree(partial, ignore_errors=True)
            if not swapped:
                shutil.rmtree(self.root / name, ignore_errors=True)
            raise
        self.cleanup(keep={name, previous})
        return self.load(name)

    def cleanup(self, keep: set) -> None:
        """Remove partial and superseded generations except those named in `keep` (caller holds
        `lock`)."""
        for path in self.root.glob("gen-*"):
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def storage(what: str) -> Iterator[None]:
    """Turn a refused write (disk full, read-only, no permission) into one clear `StorageError`."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err)
        raise StorageError(
            f"cannot write {what}: {reason}; free space on that disk (or fix its permissions) and try again; "
            "the index is as it was before"
        ) from None


_META_FIELDS = {"format": str, "fingerprint": str, "images_root": str, "index_factory": str, "next_id": int,
                "source": dict}
_ENTRY_FIELDS = {"id": int, "source": str, "path": str, "sha256": str, "size": int}


def _parse_meta(meta, path: Path) -> dict:
    """meta.json, checked field by field, so a hand edit is named instead of failing later."""
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a JSON object")
    if meta.get("format") != FORMAT:
        raise SearchIndexError(f"{path}: format {meta.get('format')!r} is not {FORMAT}; rebuild the index")
    for key, kind in _META_FIELDS.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise ValueError(f"{path}: field {key!r} is {meta.get(key)!r}, not a {kind.__name__}")
    threshold = meta.get("match_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise ValueError(f"{path}: field 'match_threshold' is {threshold!r}, not a number or null")
    return meta


def _parse_entry(line: str, path: Path, number: int) -> Entry:
    """One manifest line, checked: fields and types, a known source, and a relative path that stays
    inside its folder (a hand-edited '../' path would serve files the index does not own)."""
    where = f"{path} line {number}"
    values = json.loads(line)
    if not isinstance(values, dict) or set(values) - {"video"} != set(_ENTRY_FIELDS):
        keys = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise ValueError(f"{where}: has {keys}, expected the fields {sorted(_ENTRY_FIELDS)} (and 'video' for a video crop)")
    for key, kind in _ENTRY_FIELDS.items():
        if not isinstance(values[key], kind) or isinstance(values[key], bool):
            raise ValueError(f"{where}: field {key!r} is {values[key]!r}, not a {kind.__name__}")
    rel = Path(values["path"])
    if values["source"] not in SOURCES or rel.is_absolute() or ".." in rel.parts or not values["path"]:
        raise ValueError(f"{where}: source {values['source']!r} / path {values['path']!r} is not an indexed file")
    if "video" in values:
        values["video"] = VideoRecord.from_dict(values["video"], where)
    return Entry(**values)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def portable_source(source: dict, root: Path) -> dict:
    """The encoder's `run_dir` / `checkpoint` as paths relative to the index `root`, each with its
    absolute path beside it (see `IndexStore.locate`), so an index moved with its run still finds it."""
    out = dict(source)
    for key in ("run_dir", "checkpoint"):
        if source.get(key):
            absolute = Path(source[key]).resolve()
            out[key], out[f"{key}_absolute"] = os.path.relpath(absolute, root), str(absolute)
    return out


def check_model(meta: dict, encoder: Encoder, root: Path) -> None:
    if meta["fingerprint"] != encoder.fingerprint:
        raise SearchIndexError(
            f"index {root} was built with model {meta['fingerprint'][:12]} "
            f"({meta.get('source', {}).get('checkpoint', '?')}) but this model is {encoder.fingerprint[:12]}; "
            "search it with that model, or index the images again into a new --out directory"
        )
