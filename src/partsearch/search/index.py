"""A gallery index on disk: manifest, embeddings, FAISS index, crash-safe generations.

Layout of INDEX_DIR (format `partsearch-index/1`):

    CURRENT                 name of the live generation, swapped with os.replace
    gen-000007/
      meta.json             format, model fingerprint, run dir + checkpoint, images root (paths
                            relative to INDEX_DIR, absolute beside them), index factory, widths,
                            next free id, match threshold (`threshold.py`; null when unknown)
      manifest.jsonl        one JSON object per image, row order = array order:
                            {"id": int, "source": "images"|"uploads", "path": relative posix path,
                             "sha256": hex, "size": bytes}
      folded.npy            (G, D) float32, `fold_gallery` (METHOD.md, Similarity)
      global.npy            (G, d) float32
      coarse.npy            (G, N_c, d) float32
      fine.npy              (G, P, d) float32
      foreground.npy        (G, h, w) float16, the image foreground maps (for explanations)
      vectors.faiss         the FAISS index over folded.npy (rebuilt from it when missing)
    work/<fingerprint>/     embedded batches of an unfinished run (batch-NNNNNN.npz), for resuming;
                            an unreadable batch counts as not done
    uploads/                images added over HTTP (their manifest source is "uploads")
    .lock                   flock taken by every writer (indexer, service)

The manifest (with the arrays beside it) is the source of truth; `vectors.faiss` is derived.
Images are never copied: paths are relative to the recorded images root (or to uploads/).
A writer builds a complete new generation directory, then swaps CURRENT: a crash at any point,
even `kill -9`, leaves the previous generation live, and the embedded batches in work/ let the
next run continue where it stopped. Unchanged files (same sha256) are never embedded again.
The generation a writer started from is kept beside the new one (older ones are removed): when the
live generation is unreadable (a damaged disk, a hand edit), the next `partsearch index` recovers
from it, or, when none is readable, indexes the images again.

`build_index(..., on_batch=f)` calls `f(n)` after the n-th batch is checkpointed into work/ (the
crash tests pause the indexer there to kill it).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import io
import json
import os
import shutil
import sys
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import faiss
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from partsearch.config import DataConfig
from partsearch.errors import DataError, SearchIndexError, StorageError
from partsearch.files import atomic_path
from partsearch.search.encoder import Encoder, GalleryArrays

FORMAT = "partsearch-index/1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
ACCEPTED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
MAX_IMAGE_PIXELS = DataConfig.max_image_pixels
# Approximate indexes return RERANK_FACTOR * k candidates, re-ranked exactly on the folded vectors [ours].
RERANK_FACTOR = 10
SOURCES = ("images", "uploads")
_BATCH_NAME = re.compile(r"batch-[0-9]{6}\.npz")
_GEN_NAME = re.compile(r"gen-[0-9]{6}")


class ImageRejected(DataError):
    """An image file or upload that cannot be indexed; the message names it and why."""


class ImageTooLarge(ImageRejected):
    """An image over the pixel limit (a decompression bomb, or simply too large)."""


@dataclass(frozen=True)
class Entry:
    """One manifest line."""

    id: int
    source: str
    path: str
    sha256: str
    size: int

    @property
    def name(self) -> str:
        return Path(self.path).name


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[Image.Image, str]:
    """Decode JPEG/PNG/WebP bytes to RGB, checking the decoded format (not the file name) and the
    pixel count before decoding (decompression bombs). Returns (image, format)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "unknown"
            if fmt not in ACCEPTED_FORMATS:
                raise ImageRejected(f"{name}: {fmt} images are not accepted; use JPEG, PNG or WebP")
            width, height = im.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"{name}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels}"
                )
            im.load()
            return im.convert("RGB"), fmt
    except ImageRejected:
        raise
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"{name}: over the pixel limit ({err})") from None
    except UnidentifiedImageError:
        # PIL's own text names the in-memory buffer (<_io.BytesIO object at 0x...>), not the file.
        raise ImageRejected(f"{name}: not a readable JPEG/PNG/WebP image (unrecognised content)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageRejected(f"{name}: not a readable JPEG/PNG/WebP image ({err})") from None


class FaissIndex:
    """Inner-product search over the folded vectors; ids are manifest ids.

    `Flat` is exact maximum-inner-product search, so it returns exactly the model's ranking.
    Any other FAISS factory string (HNSW32, IVF1024,PQ32, ...) gives candidates that are then
    re-ranked exactly on the stored folded vectors [ours].
    """

    def __init__(self, index: faiss.Index, folded: np.ndarray, ids: np.ndarray, factory: str):
        self.index = index
        self.folded = folded
        self.ids = ids
        self.factory = factory

    @property
    def exact(self) -> bool:
        return self.factory == "Flat"

    @classmethod
    def build(cls, folded: np.ndarray, ids: np.ndarray, factory: str = "Flat") -> "FaissIndex":
        folded = np.ascontiguousarray(folded, dtype=np.float32)
        try:
            index = faiss.index_factory(folded.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:
                index.train(folded)
            index.add(folded)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
            raise SearchIndexError(
                f"--index-factory {factory!r} cannot index {len(folded)} vectors of width {folded.shape[1]}: "
                f"{first}; use Flat (exact) or HNSW32 for small galleries"
            ) from None
        return cls(index, folded, ids, factory)

    @classmethod
    def load(cls, path: Path, folded: np.ndarray, ids: np.ndarray, factory: str) -> "FaissIndex":
        """Read `vectors.faiss`; rebuild it from the folded vectors when missing or stale."""
        if path.is_file():
            try:
                index = faiss.read_index(str(path))
                if index.ntotal == len(folded) and index.d == folded.shape[1]:
                    return cls(index, np.ascontiguousarray(folded, dtype=np.float32), ids, factory)
            except RuntimeError:
                pass
        return cls.build(folded, ids, factory)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query_folded: np.ndarray, query_global: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`(Q, D)` queries -> scores `(Q, k')` and ids `(Q, k')`, k' = min(k, G), best first."""
        query = np.ascontiguousarray(query_folded, dtype=np.float32)
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(query), 0), np.float32), np.zeros((len(query), 0), np.int64)
        if self.exact:
            scores, rows = self.index.search(query, k)
        else:
            _, cand = self.index.search(query, min(len(self), k * RERANK_FACTOR))
            scores = np.full((len(query), k), -np.inf, np.float32)
            rows = np.full((len(query), k), -1, np.int64)
            for q, c in enumerate(cand):
                c = c[c >= 0]
                exact = self.folded[c] @ query[q]
                order = np.argsort(-exact, kind="stable")[:k]
                scores[q, : len(order)] = exact[order]
                rows[q, : len(order)] = c[order]
        ids = np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)
        return scores, ids


def check_factory(factory: str, dim: int) -> None:
    """Refuse a string FAISS cannot parse before any image is embedded (whether the gallery is
    large enough for it is known only at the end)."""
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError:
        raise SearchIndexError(
            f"--index-factory {factory!r} is not a FAISS index factory string; use Flat (exact), HNSW32 "
            "or IVF1024,PQ32 (approximate)"
        ) from None


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

    def __post_init__(self):
        self.rows = {e.id: i for i, e in enumerate(self.entries)}

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
                (partial / "manifest.jsonl").write_text("".join(json.dumps(asdict(e)) + "\n" for e in entries))
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
    if not isinstance(values, dict) or set(values) != set(_ENTRY_FIELDS):
        keys = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise ValueError(f"{where}: has {keys}, expected the fields {sorted(_ENTRY_FIELDS)}")
    for key, kind in _ENTRY_FIELDS.items():
        if not isinstance(values[key], kind) or isinstance(values[key], bool):
            raise ValueError(f"{where}: field {key!r} is {values[key]!r}, not a {kind.__name__}")
    rel = Path(values["path"])
    if values["source"] not in SOURCES or rel.is_absolute() or ".." in rel.parts or not values["path"]:
        raise ValueError(f"{where}: source {values['source']!r} / path {values['path']!r} is not an indexed file")
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


def scan_images(root: Path) -> list[str]:
    """Relative posix paths of every jpg/jpeg/png/webp under `root`, sorted. Hidden files and
    everything in hidden folders (.thumbnails, .git, a tool's cache) are left out."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in rel.parts) and path.is_file():
            found.append(rel.as_posix())
    return sorted(found)


class _WorkCache:
    """Embedded batches of an unfinished run, keyed by sha256 (`work/<fingerprint>/batch-NNNNNN.npz`).

    Only complete batches count: a batch is written to a hidden temporary name and renamed, and a
    file that is not a readable batch (cut short, emptied, a leftover temporary) is ignored, so
    its images are embedded again instead of blocking the index."""

    def __init__(self, root: Path, fingerprint: str):
        self.dir = root / "work" / fingerprint[:32]
        self.shas: dict[str, tuple[GalleryArrays, np.ndarray, int]] = {}
        self.batches = 0
        for path in sorted(self.dir.glob("batch-*.npz")):
            if not _BATCH_NAME.fullmatch(path.name):
                continue
            self.batches = max(self.batches, int(path.name[6:12]))
            try:
                with np.load(path) as z:
                    arrays = GalleryArrays(z["global_"], z["coarse"], z["fine"], z["foreground"])
                    folded, shas = z["folded"], [str(s) for s in z["sha256"]]
                if not len(shas) == len(folded) == len(arrays):
                    continue
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                continue  # a batch cut short by a crash is embedded again
            for i, sha in enumerate(shas):
                self.shas[sha] = (arrays, folded, i)

    def add(self, shas: list[str], arrays: GalleryArrays, folded: np.ndarray) -> None:
        self.batches += 1
        final = self.dir / f"batch-{self.batches:06d}.npz"
        with storage(f"embedded batch {final}"), atomic_path(final) as tmp:
            with open(tmp, "wb") as handle:  # a handle, so numpy adds no .npz suffix to the name
                np.savez(handle, sha256=np.array(shas), folded=folded, global_=arrays.global_,
                         coarse=arrays.coarse, fine=arrays.fine, foreground=arrays.foreground.astype(np.float16))
                handle.flush()
                os.fsync(handle.fileno())
        for i, sha in enumerate(shas):
            self.shas[sha] = (arrays, folded, i)

    def clear(self) -> None:
        shutil.rmtree(self.dir.parent, ignore_errors=True)


@dataclass
class BuildReport:
    total: int
    added: int
    removed: int
    embedded: int
    reused: int
    skipped: list[str]
    generation: str
    index_dir: str

    def summary(self) -> str:
        text = (f"index {self.index_dir} ({self.generation}): {self.total} images; {self.added} added, "
                f"{self.removed} removed, {self.embedded} embedded, {self.reused} reused")
        if self.skipped:
            text += f"; {len(self.skipped)} skipped (unreadable): " + ", ".join(self.skipped[:5])
        return text


def _as_encoder(run_or_encoder, device: str = "auto") -> Encoder:
    if hasattr(run_or_encoder, "encode_images"):
        return run_or_encoder
    from partsearch.search.encoder import RunEncoder

    return RunEncoder(None, device=device, run=run_or_encoder)


def _stack_rows(rows: list[tuple[GalleryArrays, np.ndarray, int]], like: tuple[GalleryArrays, np.ndarray] | None):
    if not rows:
        if like is None:
            return None
        return like[0].take([]), like[1][:0]
    arrays = GalleryArrays(
        np.stack([a.global_[i] for a, _, i in rows]),
        np.stack([a.coarse[i] for a, _, i in rows]),
        np.stack([a.fine[i] for a, _, i in rows]),
        np.stack([np.asarray(a.foreground[i], np.float32) for a, _, i in rows]),
    )
    return arrays, np.stack([f[i] for _, f, i in rows]).astype(np.float32)


def build_index(
    run,
    images_dir: str | Path,
    out_dir: str | Path,
    index_factory: str = "Flat",
    batch_size: int = 64,
    progress: bool = True,
    max_pixels: int = MAX_IMAGE_PIXELS,
    on_batch: Callable[[int], None] | None = None,
) -> BuildReport:
    """Create or update the index at `out_dir` for every image under `images_dir`.

    `run` is an `Encoder` or a `LoadedRun`. New files are embedded, deleted files dropped, and
    files whose sha256 is already in the index (or in an unfinished run's work/) are reused.
    """
    encoder = _as_encoder(run)
    images_root = Path(images_dir).resolve()
    if not images_root.is_dir():
        raise DataError(f"--images {images_dir}: no such folder")
    if batch_size < 1:
        raise DataError(f"--batch-size {batch_size}: must be at least 1")
    check_factory(index_factory, encoder.dim * (1 + encoder.num_coarse + encoder.num_fine))
    from partsearch.search import threshold as match_threshold

    threshold = match_threshold.for_run(encoder)
    store = IndexStore(out_dir)
    with store.lock():
        old = store.load_for_update()
        recovered = old is not None and old.name != store.current_name()
        if old is not None:
            check_model(old.meta, encoder, store.root)
        work = _WorkCache(store.root, encoder.fingerprint)
        files = [("images", p, images_root / p) for p in scan_images(images_root)]
        if store.uploads.is_dir():
            files += [("uploads", p, store.uploads / p) for p in scan_images(store.uploads)]
        old_keys = {(e.source, e.path): e for e in old.entries} if old else {}
        old_rows = old.reuse_by_sha() if old else {}
        next_id = old.meta["next_id"] if old else 0

        scanned: list[tuple[str, str, str, int]] = []
        for source, rel, path in tqdm(files, desc="hashing", unit="img", disable=not progress):
            data = path.read_bytes()
            scanned.append((source, rel, sha256_bytes(data), len(data)))
        pending = {sha: (rel, path) for (source, rel, sha, _), (_, _, path) in zip(scanned, files)
                   if sha not in old_rows and sha not in work.shas}
        skipped = _embed_pending(encoder, pending, work, batch_size, progress, max_pixels, on_batch)

        entries: list[Entry] = []
        rows: list[tuple[GalleryArrays, np.ndarray, int]] = []
        reused = 0
        for source, rel, sha, size in scanned:
            if sha in old_rows:
                rows.append((old.arrays, old.folded, old_rows[sha]))
                reused += 1
            elif sha in work.shas:
                rows.append(work.shas[sha])
            else:
                continue  # unreadable, reported in `skipped`
            previous = old_keys.get((source, rel))
            if previous is not None and previous.sha256 == sha:
                entry_id = previous.id
            else:
                entry_id, next_id = next_id, next_id + 1
            entries.append(Entry(entry_id, source, rel, sha, size))

        kept_ids = {e.id for e in entries}
        removed = sum(1 for e in (old.entries if old else []) if e.id not in kept_ids)
        added = sum(1 for e in entries if e.id not in (old.rows if old else {}))
        unchanged = (old is not None and not recovered and not added and not removed
                     and old.meta["index_factory"] == index_factory
                     and store.images_root(old.meta).resolve() == images_root)
        if unchanged:
            name = old.name
        else:
            stacked = _stack_rows(rows, (old.arrays, old.folded) if old else None)
            if stacked is None:
                raise DataError(f"--images {images_root}: no readable JPEG/PNG/WebP images found")
            arrays, folded = stacked
            meta = {
                "format": FORMAT,
                "fingerprint": encoder.fingerprint,
                "source": portable_source(encoder.source, store.root),
                "images_root": os.path.relpath(images_root, store.root),
                "images_root_absolute": str(images_root),
                "index_factory": index_factory,
                "dim": encoder.dim,
                "num_coarse": encoder.num_coarse,
                "num_fine": encoder.num_fine,
                "folded_dim": int(folded.shape[1]),
                "next_id": next_id,
                "match_threshold": threshold,
            }
            name = store.write(meta, entries, arrays, folded, previous=old.name if old else None).name
        work.clear()
    return BuildReport(len(entries), added, removed, len(pending) - len(skipped),
                       reused, skipped, name, str(store.root))


def _embed_pending(encoder: Encoder, pending: dict[str, tuple[str, Path]], work: _WorkCache,
                   batch_size: int, progress: bool, max_pixels: int,
                   on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Embed the images not yet embedded, checkpointing every batch into `work` (then calling
    `on_batch(batches done)`); returns the relative paths of the unreadable ones."""
    skipped: list[str] = []
    items = list(pending.items())
    done_batches = 0
    bar = tqdm(total=len(items), desc="embedding", unit="img", disable=not progress)
    for start in range(0, len(items), batch_size):
        shas, images = [], []
        for sha, (rel, path) in items[start:start + batch_size]:
            try:
                image, _ = decode_image(path.read_bytes(), rel, max_pixels)
            except ImageRejected as err:
                print(f"warning: skipped {err}", file=sys.stderr)
                skipped.append(rel)
                continue
            shas.append(sha)
            images.append(image)
        if images:
            arrays = encoder.encode_images(images)
            work.add(shas, arrays, encoder.fold_gallery(arrays))
        bar.update(len(items[start:start + batch_size]))
        done_batches += 1
        if on_batch is not None:
            on_batch(done_batches)
    bar.close()
    return skipped


def add_image(store: IndexStore, encoder: Encoder, data: bytes, name: str,
              max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[Entry, bool, Generation]:
    """Validate, store under uploads/ and index one uploaded image. Returns (entry, added, generation);
    `added` is False when the same bytes are already indexed. Nothing is written when the image is
    rejected."""
    image, fmt = decode_image(data, name, max_pixels)
    sha = sha256_bytes(data)
    with store.lock():
        old = store.load()
        check_model(old.meta, encoder, store.root)
        for entry in old.entries:
            if entry.sha256 == sha:
                return entry, False, old
        arrays = encoder.encode_images([image])
        folded = encoder.fold_gallery(arrays)
        rel = sha[:32] + ACCEPTED_FORMATS[fmt]
        with storage(f"upload {store.uploads / rel}"), atomic_path(store.uploads / rel) as tmp:
            tmp.write_bytes(data)
        entry = Entry(old.meta["next_id"], "uploads", rel, sha, len(data))
        meta = dict(old.meta, next_id=old.meta["next_id"] + 1)
        new_arrays = GalleryArrays.concat([old.arrays.take(range(len(old.entries))), arrays])
        try:
            gen = store.write(meta, old.entries + [entry], new_arrays, np.concatenate([old.folded, folded]),
                              previous=old.name)
        except BaseException:
            (store.uploads / rel).unlink(missing_ok=True)
            raise
        return entry, True, gen


def delete_image(store: IndexStore, image_id: int) -> tuple[Entry, Generation]:
    """Remove one image from the manifest and the vectors. Only a file the index owns (an upload,
    under uploads/) is deleted from disk; a file in the images folder belongs to the user and is
    never touched (the next `partsearch index` of that folder adds it again)."""
    with store.lock():
        old = store.load()
        if image_id not in old.rows:
            raise KeyError(image_id)
        row = old.rows[image_id]
        entry = old.entries[row]
        keep = [i for i in range(len(old.entries)) if i != row]
        gen = store.write(old.meta, [old.entries[i] for i in keep], old.arrays.take(keep), old.folded[keep],
                          previous=old.name)
        if entry.source == "uploads":
            store.image_path(old.meta, entry).unlink(missing_ok=True)
        return entry, gen
