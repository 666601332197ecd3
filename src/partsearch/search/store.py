"""The segmented store of an index directory on disk: the catalogue of live segments and deleted
ids (one small JSON file per generation, made live by swapping CURRENT with os.replace, fsynced),
writing a segment, recovery from an unreadable generation, the conversion of an index of the older
whole-generation format, and the writers' lock. The layout is described in
`partsearch.search.index` (and docs/SEARCH.md); the rows a store holds in memory are in
`segments`; what writes a store: the build pipeline (`index`), uploads and deletes (`writes`),
compaction (`compaction`).
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from partsearch.errors import SearchIndexError, StorageError
from partsearch.search.encoder import Encoder
from partsearch.search.segments import STORED_DTYPE, Entry, Generation, Segment, assemble, parse_entry
from partsearch.search.vectors import FaissIndex

FORMAT = "partsearch-index/2"
LEGACY_FORMAT = "partsearch-index/1"  # whole generations (gen-NNNNNN/ folders), converted on the next write
# Rows copied at once when a segment is written from other arrays (bounds the memory of a merge).
COPY_ROWS = 65536
_GEN_NAME = re.compile(r"gen-[0-9]{6}")
_SEG_NAME = re.compile(r"seg-[0-9a-f]{12}")


class IndexStore:
    """Reads the generations of one index directory and writes its segments and catalogues."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.uploads = self.root / "uploads"
        self.segments_dir = self.root / "segments"
        self._segments: dict[str, Segment] = {}  # segments are immutable: loaded once per process

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

    def catalogue_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def is_legacy(self, name: str) -> bool:
        """Whether generation `name` is a folder of the older whole-generation format."""
        return (self.root / name).is_dir()

    def load(self, name: str | None = None) -> Generation:
        name = name or self.current_name()
        if self.is_legacy(name):
            raise SearchIndexError(
                f"index {self.root} is in the older format {LEGACY_FORMAT} (every change rewrote all of it); "
                f"convert it once with `partsearch index --compact --out {self.root}` (nothing is embedded "
                "again), or re-run `partsearch index` on it"
            )
        path = self.catalogue_path(name)
        try:
            catalogue = _parse_catalogue(json.loads(path.read_text()), path)
            segments = [self.segment(s["name"]) for s in catalogue["segments"]]
            for ref, segment in zip(catalogue["segments"], segments):
                if ref["rows"] != len(segment):
                    raise ValueError(f"{path}: segment {ref['name']} should hold {ref['rows']} rows, it holds {len(segment)}")
                if segment.folded.shape[1] != catalogue["folded_dim"]:
                    raise ValueError(f"{path}: segment {ref['name']} has vectors of width {segment.folded.shape[1]}, "
                                     f"not {catalogue['folded_dim']}")
        except SearchIndexError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SearchIndexError(
                f"index generation {path} is unreadable ({err}); re-run `partsearch index` with the same --images "
                f"and --out {self.root} to recover it"
            ) from None
        self._segments = {s.name: s for s in segments}
        meta = {k: v for k, v in catalogue.items() if k != "segments"}
        return assemble(name, meta, segments, {s["name"]: s["deleted"] for s in catalogue["segments"]})

    def segment(self, name: str) -> Segment:
        """Segment `name`, read once per process (segments never change)."""
        if name in self._segments:
            return self._segments[name]
        folder = self.segments_dir / name
        info = json.loads((folder / "segment.json").read_text())
        if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("index_factory"), str):
            raise ValueError(f"{folder / 'segment.json'}: not a {FORMAT} segment description")
        manifest = folder / "manifest.jsonl"
        entries = [parse_entry(line, manifest, number)
                   for number, line in enumerate(manifest.read_text().splitlines(), start=1) if line]
        if len({e.id for e in entries}) != len(entries):
            raise ValueError(f"{manifest}: an id appears twice")
        folded = np.load(folder / "folded.npy", mmap_mode="r")
        foreground = np.load(folder / "foreground.npy", mmap_mode="r")
        if folded.ndim != 2 or not len(entries) == len(folded) == len(foreground):
            raise ValueError(f"{folder}: the manifest has {len(entries)} images but folded.npy {folded.shape} "
                             f"and foreground.npy {foreground.shape}")
        ids = np.array([e.id for e in entries], np.int64)
        vectors = FaissIndex.load(folder / "vectors.faiss", folded, ids, info["index_factory"])
        segment = Segment(name, entries, folded, foreground, vectors)
        self._segments[name] = segment
        return segment

    def generations(self) -> list[str]:
        """Names of the catalogues on disk, newest first."""
        return sorted((p.name[:-5] for p in self.root.glob("gen-*.json") if _GEN_NAME.fullmatch(p.name[:-5])),
                      reverse=True)

    def load_for_update(self) -> Generation | None:
        """The live generation for a writer (converted first when it is of the older format);
        when it is unreadable, the newest readable older one (a warning says which), or None
        (build from the images again) when there is none."""
        if not self.exists():
            return None
        broken = self.current_name()
        try:
            return self.convert_legacy(broken) if self.is_legacy(broken) else self.load()
        except SearchIndexError as err:
            problem = str(err)
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

    def convert_legacy(self, name: str) -> Generation:
        """Convert generation folder `name` of the older format into one segment and make it live
        (caller holds `lock`). Nothing is embedded again; the folder is removed once the new
        catalogue is live."""
        folder = self.root / name
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if not isinstance(meta, dict) or meta.get("format") != LEGACY_FORMAT:
                raise ValueError(f"{folder / 'meta.json'}: format {meta.get('format')!r} is neither "
                                 f"{LEGACY_FORMAT} nor {FORMAT}")
            manifest = folder / "manifest.jsonl"
            entries = [parse_entry(line, manifest, number)
                       for number, line in enumerate(manifest.read_text().splitlines(), start=1) if line]
            folded = np.load(folder / "folded.npy", mmap_mode="r")
            foreground = np.load(folder / "foreground.npy", mmap_mode="r")
            if not len(entries) == len(folded) == len(foreground):
                raise ValueError(f"{folder}: manifest has {len(entries)} images but the arrays {len(folded)}")
            meta = dict({k: v for k, v in meta.items() if k not in ("count", "generation", "written")},
                        format=FORMAT, segments=[])
            meta.setdefault("folded_dim", int(folded.shape[1]))
            meta = _parse_meta(meta, folder / "meta.json")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SearchIndexError(f"index generation {folder} ({LEGACY_FORMAT}) is unreadable ({err})") from None
        segment = self.write_segment(entries, folded, foreground, meta["index_factory"])
        gen = self.commit(meta, [{"name": segment.name, "rows": len(segment), "deleted": []}])
        print(f"note: converted index {self.root} from {LEGACY_FORMAT} to {FORMAT} ({len(entries)} images)",
              file=sys.stderr)
        return gen

    def write_segment(self, entries: Sequence[Entry], folded, foreground, factory: str,
                      strict: bool = False) -> Segment:
        """Write a new immutable segment of `entries` with their folded vectors `(n, D)` and
        foreground maps `(n, h, w)` (arrays or `RowStack`s; copied in chunks of COPY_ROWS) and
        its FAISS index. It is not live until a catalogue names it (`commit`), so no lock is
        needed. A factory that cannot index so few vectors (IVF needs as many as lists) falls
        back to Flat, exact, unless `strict`."""
        name = f"seg-{secrets.token_hex(6)}"
        partial = self.segments_dir / f".{name}.partial"
        n = len(entries)
        try:
            with storage(f"index segment {self.segments_dir / name}"):
                partial.mkdir(parents=True)
                stored = np.lib.format.open_memmap(partial / "folded.npy", mode="w+", dtype=STORED_DTYPE,
                                                   shape=(n, folded.shape[1]))
                maps = np.lib.format.open_memmap(partial / "foreground.npy", mode="w+", dtype=STORED_DTYPE,
                                                 shape=(n, *foreground.shape[1:]))
                for start in range(0, n, COPY_ROWS):
                    stop = min(n, start + COPY_ROWS)
                    stored[start:stop] = folded[start:stop]
                    maps[start:stop] = foreground[start:stop]
                stored.flush()
                maps.flush()
                ids = np.array([e.id for e in entries], np.int64)
                vectors, used = _build_vectors(stored, ids, factory, strict)  # on the stored float16 values
                del stored, maps
                (partial / "manifest.jsonl").write_text("".join(e.to_json() + "\n" for e in entries))
                (partial / "segment.json").write_text(json.dumps(
                    {"format": FORMAT, "rows": n, "dtype": np.dtype(STORED_DTYPE).name, "index_factory": used}))
                if used != "Flat":  # a Flat index is the vectors again, as float32: built from folded.npy at load
                    try:
                        vectors.save(partial / "vectors.faiss")
                    except RuntimeError as err:  # FAISS reports a failed write this way
                        raise OSError(f"FAISS could not write vectors.faiss ({str(err).strip().splitlines()[-1]})") from None
                for path in partial.iterdir():
                    _fsync(path)
                os.rename(partial, self.segments_dir / name)
                _fsync(self.segments_dir)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return self.segment(name)

    def _next_name(self) -> str:
        numbers = [int(p.name[4:10]) for p in self.root.glob("gen-*") if p.name[4:10].isdigit()]
        return f"gen-{max(numbers, default=0) + 1:06d}"

    def commit(self, meta: dict, segments: list[dict], previous: str | None = None) -> Generation:
        """Write a new catalogue naming `segments` ({"name", "rows", "deleted": [ids]}, in row
        order) and make it live by swapping CURRENT (caller holds `lock`). The catalogue it was
        made from, `previous`, and its segments are kept, so an unreadable live generation can be
        recovered by the next writer (`load_for_update`); older catalogues and the segments no
        kept catalogue names are removed."""
        name = self._next_name()
        segments = [dict(s, deleted=sorted(set(s["deleted"]))) for s in segments if s["rows"] > len(set(s["deleted"]))]
        count = sum(s["rows"] - len(s["deleted"]) for s in segments)
        catalogue = dict(meta, format=FORMAT, generation=name, count=count, segments=segments,
                         written=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        final, partial, tmp = self.catalogue_path(name), self.root / f"{name}.json.partial", self.root / "CURRENT.tmp"
        swapped = False
        try:
            with storage(f"index catalogue {final}"):
                _write_synced(partial, json.dumps(catalogue, indent=1))
                os.rename(partial, final)
                _fsync(self.root)
                _write_synced(tmp, name + "\n")
                os.replace(tmp, self.current_file)
                swapped = True
                _fsync(self.root)
        except BaseException:
            for path in (tmp, partial) if swapped else (tmp, partial, final):
                path.unlink(missing_ok=True)
            raise
        self.cleanup(keep={name, previous})
        return self.load(name)

    def cleanup(self, keep: set) -> None:
        """Remove the catalogues (and folders of the older format) not named in `keep`, partial
        ones, and every segment no kept catalogue names (caller holds `lock`)."""
        named: set[str] = set()
        for name in keep:
            try:
                named.update(s["name"] for s in json.loads(self.catalogue_path(name).read_text())["segments"])
            except (TypeError, OSError, ValueError, KeyError):
                continue
        for path in self.root.glob("gen-*"):
            if path.name.removesuffix(".json") in keep:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if self.segments_dir.is_dir():
            for path in self.segments_dir.iterdir():
                if path.name not in named:
                    shutil.rmtree(path, ignore_errors=True)


def _build_vectors(folded: np.ndarray, ids: np.ndarray, factory: str, strict: bool) -> tuple[FaissIndex, str]:
    try:
        return FaissIndex.build(folded, ids, factory), factory
    except SearchIndexError:
        if strict or factory == "Flat":
            raise
        return FaissIndex.build(folded, ids, "Flat"), "Flat"


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


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
                "source": dict, "dim": int, "num_coarse": int, "num_fine": int, "folded_dim": int}
_SEGMENT_FIELDS = {"name": str, "rows": int, "deleted": list}


def _parse_meta(meta, path: Path) -> dict:
    """meta.json, checked field by field, so a hand edit is named instead of failing later."""
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a JSON object")
    if meta.get("format") != FORMAT:
        raise SearchIndexError(f"{path}: format {meta.get('format')!r} is not {FORMAT}; rebuild the index with "
                               "`partsearch index RUN_DIR --images DIR --out INDEX_DIR`")
    for key, kind in _META_FIELDS.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise ValueError(f"{path}: field {key!r} is {meta.get(key)!r}, not a {kind.__name__}")
    threshold = meta.get("match_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise ValueError(f"{path}: field 'match_threshold' is {threshold!r}, not a number or null")
    return meta


def _parse_catalogue(catalogue, path: Path) -> dict:
    """A catalogue (`gen-NNNNNN.json`): the index's meta fields and its segment list, checked."""
    catalogue = _parse_meta(catalogue, path)
    segments = catalogue.get("segments")
    if not isinstance(segments, list):
        raise ValueError(f"{path}: field 'segments' is {segments!r}, not a list")
    for number, ref in enumerate(segments, start=1):
        where = f"{path} segment {number}"
        if not isinstance(ref, dict) or set(ref) != set(_SEGMENT_FIELDS):
            raise ValueError(f"{where}: expected the fields {sorted(_SEGMENT_FIELDS)}")
        for key, kind in _SEGMENT_FIELDS.items():
            if not isinstance(ref[key], kind) or isinstance(ref[key], bool):
                raise ValueError(f"{where}: field {key!r} is {ref[key]!r}, not a {kind.__name__}")
        if not _SEG_NAME.fullmatch(ref["name"]) or not all(isinstance(i, int) for i in ref["deleted"]):
            raise ValueError(f"{where}: name {ref['name']!r} or its deleted ids are not a segment's")
    return catalogue



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
