"""The segmented store of an index directory: immutable segments of manifest rows and vectors, the
catalogue of live segments and deleted ids (one small JSON file per generation, made live by
swapping CURRENT with os.replace, fsynced), recovery from an unreadable generation, the conversion
of an index of the older whole-generation format, and the writers' lock. The layout is described
in `partsearch.search.index` (and docs/SEARCH.md); the build pipeline, uploads, deletes and
compaction that write a store are there too.

A segment stores each image's folded vector once, float16 [ours: chosen over int8 with a
per-vector scale, docs/SEARCH.md gives the measured score error]; its global, coarse and fine
vectors are views of that array (`level_views`), and `RowStack` reads the live rows of all segments
as one array without copying them.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from partsearch.errors import SearchIndexError, StorageError
from partsearch.search.encoder import Encoder, GalleryArrays
from partsearch.search.tracks import VideoRecord, group_tracks
from partsearch.search.vectors import FaissIndex

FORMAT = "partsearch-index/2"
LEGACY_FORMAT = "partsearch-index/1"  # whole generations (gen-NNNNNN/ folders), converted on the next write
SOURCES = ("images", "uploads")
STORED_DTYPE = np.float16
# Rows copied at once when a segment is written from other arrays (bounds the memory of a merge).
COPY_ROWS = 65536
_GEN_NAME = re.compile(r"gen-[0-9]{6}")
_SEG_NAME = re.compile(r"seg-[0-9a-f]{12}")


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


def level_views(folded: np.ndarray, dim: int, num_coarse: int, num_fine: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The global `(n, d)`, coarse `(n, N_c, d)` and fine `(n, P, d)` vectors of folded `(n, D)`
    rows (`model.similarity.fold_gallery` concatenates them in this order), as views: no copy."""
    n, split = len(folded), dim * (1 + num_coarse)
    return (folded[:, :dim], folded[:, dim:split].reshape(n, num_coarse, dim),
            folded[:, split:].reshape(n, num_fine, dim))


class RowStack:
    """The live rows of several arrays read as one `(N, ...)` array, without copying them: the
    rows `rows[s]` of `parts[s]` follow those of `parts[s - 1]`. Indexing with an integer, a
    slice, an integer or boolean array (optionally followed by more indices) returns a numpy
    array; `np.asarray` gathers every row (avoid it on a large gallery)."""

    def __init__(self, parts: Sequence[np.ndarray], rows: Sequence[np.ndarray]):
        self.parts, self.rows = list(parts), [np.asarray(r, np.int64) for r in rows]
        self.offsets = np.cumsum([0] + [len(r) for r in self.rows])
        self.shape = (int(self.offsets[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype
        whole = len(self.parts) == 1 and len(self.rows[0]) == len(self.parts[0])
        self._whole = self.parts[0] if whole else None  # one segment, nothing deleted: index it directly

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if self._whole is not None:
            return self._whole[(key, *rest)]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} is out of range for {len(self)} rows")
            s = int(np.searchsorted(self.offsets, i, side="right")) - 1
            return self.parts[s][(self.rows[s][i - self.offsets[s]], *rest)]
        index = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = index.astype(np.int64).reshape(-1)
        index = np.where(index < 0, index + len(self), index)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} rows")
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        seg = np.searchsorted(self.offsets, index, side="right") - 1
        for s in np.unique(seg):
            mask = seg == s
            out[mask] = self.parts[s][self.rows[s][index[mask] - self.offsets[s]]]
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype, copy=False)


@dataclass
class Segment:
    """One immutable segment, loaded: its manifest rows, folded vectors `(n, D)` and foreground maps
    `(n, h, w)` (float16, memory-mapped) and the FAISS index over its rows."""

    name: str
    entries: list[Entry]
    folded: np.ndarray
    foreground: np.ndarray
    vectors: FaissIndex
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self):
        self.ids = np.array([e.id for e in self.entries], np.int64)

    def __len__(self) -> int:
        return len(self.entries)


class SegmentVectors:
    """A `vectors.VectorIndex` over the segments of a generation: each segment's FAISS index is
    searched for k plus its deleted rows, deleted ids are dropped and the lists merged by score.
    Each segment's scores are exact on its folded vectors (Flat, or the exact re-rank), so the
    merged top k is the top k of the generation."""

    def __init__(self, parts: Sequence[tuple[FaissIndex, np.ndarray]]):
        self.parts = list(parts)

    def __len__(self) -> int:
        return sum(len(index) - len(deleted) for index, deleted in self.parts)

    def search(self, query_folded: np.ndarray, query_global: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        scores = [np.zeros((len(query_folded), 0), np.float32)]
        ids = [np.zeros((len(query_folded), 0), np.int64)]
        for index, deleted in self.parts if k else []:
            s, i = index.search(query_folded, query_global, k + len(deleted))
            if len(deleted):
                gone = np.isin(i, deleted)
                s, i = np.where(gone, -np.inf, s).astype(np.float32), np.where(gone, -1, i)
            scores.append(s)
            ids.append(i)
        scores, ids = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def sync(self, generation: Generation) -> None:
        """Nothing to do: every segment's FAISS index is built with it and never changes."""


@dataclass
class Generation:
    """One generation of an index, loaded: the catalogue's segments less their deleted rows.
    `entries`, `folded` `(G, D)` and `arrays` (global, coarse, fine: views of `folded`;
    foreground) are in the same row order; `folded` and `arrays` are `RowStack`s of the
    segments' float16 memory maps."""

    name: str
    meta: dict
    entries: list[Entry]
    arrays: GalleryArrays
    folded: RowStack
    vectors: SegmentVectors
    segments: list[Segment] = field(default_factory=list)
    deleted: dict[str, list[int]] = field(default_factory=dict)  # segment name -> its deleted ids
    rows: dict[int, int] = field(default_factory=dict)
    tracks: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # (video, track) -> rows

    def __post_init__(self):
        self.rows = {e.id: i for i, e in enumerate(self.entries)}
        self.tracks = group_tracks([e.video for e in self.entries])

    @property
    def ids(self) -> np.ndarray:
        return np.array([e.id for e in self.entries], np.int64)

    def reuse_by_sha(self) -> dict[str, int]:
        return {e.sha256: i for i, e in enumerate(self.entries)}

    def catalogue_segments(self) -> list[dict]:
        """The catalogue's segment list of this generation (to extend in a new one)."""
        return [{"name": s.name, "rows": len(s), "deleted": list(self.deleted.get(s.name, []))} for s in self.segments]


def assemble(name: str, meta: dict, segments: list[Segment], deleted: dict[str, list[int]]) -> Generation:
    """A `Generation` over `segments`, less the ids `deleted[segment name]`."""
    live = [np.flatnonzero(~np.isin(s.ids, deleted.get(s.name, []))) for s in segments]
    entries = [s.entries[r] for s, rows in zip(segments, live) for r in rows]
    dim, n_c, p = meta["dim"], meta["num_coarse"], meta["num_fine"]
    if not segments:  # every image deleted: empty arrays of the right widths
        empty = np.zeros((0, dim * (1 + n_c + p)), STORED_DTYPE)
        segments_folded, foregrounds, live = [empty], [np.zeros((0, 1, 1), STORED_DTYPE)], [np.zeros(0, np.int64)]
    else:
        segments_folded, foregrounds = [s.folded for s in segments], [s.foreground for s in segments]
    views = [level_views(f, dim, n_c, p) for f in segments_folded]
    arrays = GalleryArrays(*(RowStack([v[level] for v in views], live) for level in range(3)),
                           RowStack(foregrounds, live))
    vectors = SegmentVectors([(s.vectors, np.asarray(deleted.get(s.name, []), np.int64)) for s in segments])
    return Generation(name, meta, entries, arrays, RowStack(segments_folded, live), vectors, list(segments),
                      {k: list(v) for k, v in deleted.items() if v})


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
        entries = [_parse_entry(line, manifest, number)
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
            entries = [_parse_entry(line, manifest, number)
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
_ENTRY_FIELDS = {"id": int, "source": str, "path": str, "sha256": str, "size": int}


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
