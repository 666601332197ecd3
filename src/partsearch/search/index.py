"""Building a gallery index on disk: the build pipeline with its resume cache, and single-image
uploads and deletes. The index is split in parts: `store` (generations, fsync, CURRENT, lock),
`vectors` (the `VectorIndex` protocol, the exact re-rank, FAISS), this module (what writes them).

Layout of INDEX_DIR (format `partsearch-index/1`):

    CURRENT                 name of the live generation, swapped with os.replace
    gen-000007/
      meta.json             format, model fingerprint, run dir + checkpoint, images root (paths
                            relative to INDEX_DIR, absolute beside them), index factory, widths,
                            next free id, match threshold (`threshold.py`; null when unknown)
      manifest.jsonl        one JSON object per image, row order = array order:
                            {"id": int, "source": "images"|"uploads", "path": relative posix path,
                             "sha256": hex, "size": bytes}, plus for a crop of a `partsearch
                            ingest` gallery "video": {"video": the video file relative to the
                            images root, "frame", "time" (s), "box": [x1, y1, x2, y2], "track"}
                            (`tracks.py`; absent for plain images and uploads, and in indexes
                            written before tracks existed, which load unchanged)
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

import hashlib
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
from tqdm import tqdm

from partsearch.config import DataConfig
from partsearch.data.images import ACCEPTED_FORMATS, ImageRejected, decode_image
from partsearch.errors import DataError, UnknownImage
from partsearch.files import atomic_path
from partsearch.search.encoder import Encoder, GalleryArrays
from partsearch.search.store import FORMAT, Entry, Generation, IndexStore, check_model, portable_source, storage
from partsearch.search.tracks import join_records
from partsearch.search.vectors import check_factory

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_IMAGE_PIXELS = DataConfig.max_image_pixels
_BATCH_NAME = re.compile(r"batch-[0-9]{6}\.npz")

if TYPE_CHECKING:
    from partsearch.runs import LoadedRun


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    tracks: int = 0  # tracks of the gallery's video crops
    vectors: str = ""  # the vector index built, in words (`FaissIndex.describe`)

    def summary(self) -> str:
        text = (f"index {self.index_dir} ({self.generation}): {self.total} images; {self.added} added, "
                f"{self.removed} removed, {self.embedded} embedded, {self.reused} reused")
        if self.tracks:
            text += f"; {self.tracks} tracks (from the gallery's video records)"
        if self.vectors:
            text += f"; vector index: {self.vectors}"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped (unreadable): " + ", ".join(self.skipped[:5])
        return text


def _as_encoder(run_or_encoder: Encoder | LoadedRun, device: str = "auto") -> Encoder:
    from partsearch.runs import LoadedRun
    from partsearch.search.encoder import RunEncoder

    if not isinstance(run_or_encoder, LoadedRun):
        return run_or_encoder
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
    index_factory: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
    max_pixels: int = MAX_IMAGE_PIXELS,
    on_batch: Callable[[int], None] | None = None,
    video_records: Iterable[dict] | None = None,
    gallery_dir: str | Path | None = None,
) -> BuildReport:
    """Create or update the index at `out_dir` for every image under `images_dir`.

    `run` is an `Encoder` or a `LoadedRun`. New files are embedded, deleted files dropped, and
    files whose sha256 is already in the index (or in an unfinished run's work/) are reused.
    `video_records` are the records of a `partsearch ingest` gallery (`crop` and `video` relative
    to `gallery_dir`, by default `images_dir`; `partsearch.video.ingest.read_records` reads them):
    each crop's manifest entry keeps its record, which makes its track searchable.
    """
    encoder = _as_encoder(run)
    images_root = Path(images_dir).resolve()
    if not images_root.is_dir():
        raise DataError(f"--images {images_dir}: no such folder")
    videos = join_records(video_records or (), Path(gallery_dir or images_root), images_root)
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
            entries.append(Entry(entry_id, source, rel, sha, size, videos.get(rel) if source == "images" else None))

        kept_ids = {e.id for e in entries}
        removed = sum(1 for e in (old.entries if old else []) if e.id not in kept_ids)
        added = sum(1 for e in entries if e.id not in (old.rows if old else {}))
        unchanged = (old is not None and not recovered and not added and not removed
                     and old.meta["index_factory"] == index_factory
                     and [e.video for e in entries] == [e.video for e in old.entries]
                     and store.images_root(old.meta).resolve() == images_root)
        if unchanged:
            gen = old
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
            gen = store.write(meta, entries, arrays, folded, previous=old.name if old else None)
        work.clear()
    tracks = len({e.video.key for e in entries if e.video is not None})
    return BuildReport(len(entries), added, removed, len(pending) - len(skipped),
                       reused, skipped, gen.name, str(store.root), tracks, gen.vectors.describe())


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
            raise UnknownImage(image_id, store.root)
        row = old.rows[image_id]
        entry = old.entries[row]
        keep = [i for i in range(len(old.entries)) if i != row]
        gen = store.write(old.meta, [old.entries[i] for i in keep], old.arrays.take(keep), old.folded[keep],
                          previous=old.name)
        if entry.source == "uploads":
            store.image_path(old.meta, entry).unlink(missing_ok=True)
        return entry, gen
