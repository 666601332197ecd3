"""Building a gallery index on disk: the build pipeline with its resume cache. The index is split
in parts: `segments` (manifest rows, segments and generations in memory), `store` (catalogues,
fsync, CURRENT, lock), `vectors` (the `VectorIndex` protocol, the exact re-rank, FAISS), this
module (the build), `writes` (uploads and deletes) and `compaction` (merging segments).

Layout of INDEX_DIR (format `partsearch-index/2`, a segmented store as Lucene, Milvus and Qdrant
keep theirs):

    CURRENT                 name of the live generation, swapped with os.replace
    gen-000007.json         the catalogue of generation 7: format, model fingerprint, run dir +
                            checkpoint, images root (paths relative to INDEX_DIR, absolute beside
                            them), index factory, widths (dim, num_coarse, num_fine, folded_dim),
                            next free id, match threshold (`threshold.py`; null when unknown), and
                            "segments": [{"name", "rows", "deleted": [ids]}] in row order
    segments/seg-3f9a0c1b2d4e/   one immutable segment (an indexing run, an upload, a merge):
      segment.json          format, rows, stored dtype, the FAISS factory of vectors.faiss
      manifest.jsonl        one JSON object per image, row order = array order:
                            {"id": int, "source": "images"|"uploads", "path": relative posix path,
                             "sha256": hex, "size": bytes}, plus for a crop of a `partsearch
                            ingest` gallery "video": {"video": the video file relative to the
                            images root, "frame", "time" (s), "box": [x1, y1, x2, y2], "track"}
                            (`tracks.py`; absent for plain images and uploads)
      folded.npy            (n, D) float16, `fold_gallery` (METHOD.md, Similarity): the one copy
                            of each vector; global / coarse / fine are views of it
      foreground.npy        (n, h, w) float16, the image foreground maps (for explanations)
      vectors.faiss         the FAISS index over folded.npy, for an approximate factory only (a Flat
                            index would hold the vectors again; it is built at load), rebuilt when
                            missing
    work/<fingerprint>/     embedded batches of an unfinished run (batch-NNNNNN.npz, per rank
                            under rank-R/ in a distributed run), for resuming; an unreadable batch
                            counts as not done
    uploads/                images added over HTTP (their manifest source is "uploads")
    .lock                   flock taken by every writer (indexer, service)

Segments and their manifests are the source of truth; `vectors.faiss` is derived. Images are never
copied: paths are relative to the recorded images root (or to uploads/). A writer writes its new
segment (new images only) under a temporary name, renames it, writes a new catalogue and swaps
CURRENT: adding or deleting k images writes O(k) bytes plus the catalogue, and a crash at any
point, even `kill -9`, leaves the previous generation live (an unnamed segment is removed by the
next writer); the embedded batches in work/ let the next run continue where it stopped. Unchanged
files (same sha256) are never embedded again. The catalogue a writer started from is kept with its
segments: when the live generation is unreadable (a damaged disk, a hand edit), the next
`partsearch index` recovers from it, or, when none is readable, indexes the images again.
Compaction (`compaction.compact`, `partsearch index --compact`; a tiered merge after each upload or delete)
merges segments into one and drops deleted rows the same way: new segment, new catalogue. An index
of the older whole-generation format (`partsearch-index/1`) is converted by the next writer.

`build_index(..., on_batch=f)` calls `f(n)` after the n-th batch is checkpointed into work/ (the
crash tests pause the indexer there to kill it); `compact(..., on_written=f)` calls `f(segment
name)` after the merged segment is written and before it goes live.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from partsearch.config import DataConfig
from partsearch.data.images import ImageRejected, decode_image
from partsearch.errors import DataError, UnsafeFile
from partsearch.files import atomic_path, regular_file_within
from partsearch.progress import tqdm
from partsearch.search.encoder import Encoder
from partsearch.search.segments import Entry
from partsearch.search.store import FORMAT, IndexStore, check_model, portable_source, storage
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
    everything in hidden folders (.thumbnails, .git, a tool's cache) are left out, and so is a
    file that leads outside `root` (a symlink out of it), with a warning: the index never reads
    what the service would refuse to serve (`files.regular_file_within`)."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in rel.parts) and path.is_file():
            try:
                regular_file_within(path, [root])
            except UnsafeFile:
                print(f"warning: skipped {rel.as_posix()}: it leads outside {root} (a symlink); only files inside "
                      "the folder given are indexed", file=sys.stderr)
                continue
            except FileNotFoundError:  # removed while the folder was being listed
                continue
            found.append(rel.as_posix())
    return sorted(found)


class _WorkCache:
    """Embedded batches of an unfinished run, keyed by sha256 (`work/<fingerprint>/batch-NNNNNN.npz`).

    Only complete batches count: a batch is written to a hidden temporary name and renamed, and a
    file that is not a readable batch (cut short, emptied, a leftover temporary) is ignored, so
    its images are embedded again instead of blocking the index."""

    def __init__(self, root: Path, fingerprint: str, rank: int | None = None):
        self.base = root / "work" / fingerprint[:32]
        self.dir = self.base if rank is None else self.base / f"rank-{rank}"
        self.shas: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}  # sha -> (folded, foreground, row)
        self.batches = 0
        self.reload()

    def reload(self) -> None:
        """Read every complete batch, this process's and (in a distributed build) the other ranks'."""
        for path in sorted([*self.base.glob("batch-*.npz"), *self.base.glob("rank-*/batch-*.npz")]):
            if not _BATCH_NAME.fullmatch(path.name):
                continue
            if path.parent == self.dir:
                self.batches = max(self.batches, int(path.name[6:12]))
            try:
                with np.load(path) as z:
                    folded, foreground, shas = z["folded"], z["foreground"], [str(s) for s in z["sha256"]]
                if not len(shas) == len(folded) == len(foreground):
                    continue
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                continue  # a batch cut short by a crash is embedded again
            for i, sha in enumerate(shas):
                self.shas[sha] = (folded, foreground, i)

    def add(self, shas: list[str], folded: np.ndarray, foreground: np.ndarray) -> None:
        self.batches += 1
        final = self.dir / f"batch-{self.batches:06d}.npz"
        with storage(f"embedded batch {final}"), atomic_path(final) as tmp:
            with open(tmp, "wb") as handle:  # a handle, so numpy adds no .npz suffix to the name
                np.savez(handle, sha256=np.array(shas), folded=folded, foreground=foreground.astype(np.float16))
                handle.flush()
                os.fsync(handle.fileno())
        for i, sha in enumerate(shas):
            self.shas[sha] = (folded, foreground, i)

    def clear(self) -> None:
        shutil.rmtree(self.base.parent, ignore_errors=True)


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


class Shard:
    """This process's part of a distributed build (`torchrun --nproc_per_node N -m partsearch
    index ...`): `rank` of `world_size`, exchanging small Python objects over the default
    `torch.distributed` process group (gloo is enough: only hashes, names and lists travel).
    `Shard()` alone is a build in one process."""

    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank, self.world_size = rank, world_size

    def all_gather(self, value) -> list:
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def part(self, items: Sequence) -> Sequence:
        """This rank's contiguous share of `items` (rank order is item order)."""
        bounds = [len(items) * r // self.world_size for r in range(self.world_size + 1)]
        return items[bounds[self.rank]:bounds[self.rank + 1]]


class _Rows:
    """Row views from several arrays (old segments, embedded batches) read in slices, so a new
    segment is written without stacking its rows first."""

    def __init__(self, rows: list[np.ndarray], like: tuple[int, ...]):
        self.rows = rows
        self.shape = (len(rows), *(rows[0].shape if rows else like))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: slice) -> np.ndarray:
        return np.stack(self.rows[key]) if self.rows[key] else np.zeros((0, *self.shape[1:]), np.float32)


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
    shard: Shard | None = None,
    video_roots: Sequence[str | Path] = (),
) -> BuildReport:
    """Create or update the index at `out_dir` for every image under `images_dir`.

    `run` is an `Encoder` or a `LoadedRun`. New files are embedded, deleted files dropped, and
    files whose sha256 is already in the index (or in an unfinished run's work/) are reused. The
    new images go into one new segment; deleted ones are marked deleted in the catalogue (a new
    index factory rewrites every image into one segment).
    `video_records` are the records of a `partsearch ingest` gallery (`crop` and `video` relative
    to `gallery_dir`, by default `images_dir`; `partsearch.video.ingest.read_records` reads them):
    each crop's manifest entry keeps its record, which makes its track searchable. A record's
    video must lie inside the gallery or one of `video_roots` (`tracks.join_records`).
    With a `shard` of a distributed build, every rank hashes and embeds its share, writes the
    segment of its share of the new images, and rank 0 (which holds the lock throughout) commits
    them all in one catalogue: the same index as one process builds.
    """
    shard = shard or Shard()
    lead = shard.rank == 0
    encoder = _as_encoder(run)
    images_root = Path(images_dir).resolve()
    if not images_root.is_dir():
        raise DataError(f"--images {images_dir}: no such folder")
    videos = join_records(video_records or (), Path(gallery_dir or images_root), images_root,
                          [Path(r) for r in video_roots])
    if batch_size < 1:
        raise DataError(f"--batch-size {batch_size}: must be at least 1")
    check_factory(index_factory, encoder.dim * (1 + encoder.num_coarse + encoder.num_fine))
    from partsearch.search import threshold as match_threshold

    threshold = match_threshold.for_run(encoder) if lead else None
    store = IndexStore(out_dir)
    progress = progress and lead
    with store.lock() if lead else contextlib.nullcontext():
        old = store.load_for_update() if lead else None
        recovered = old is not None and old.name != store.current_name()
        if old is not None:
            check_model(old.meta, encoder, store.root)
        name, recovered = shard.all_gather((old.name if old is not None else None, recovered))[0]
        if not lead and name is not None:
            old = store.load(name)
        work = _WorkCache(store.root, encoder.fingerprint, None if shard.world_size == 1 else shard.rank)
        files = [("images", p, images_root / p) for p in scan_images(images_root)]
        if store.uploads.is_dir():
            files += [("uploads", p, store.uploads / p) for p in scan_images(store.uploads)]
        old_keys = {(e.source, e.path): e for e in old.entries} if old else {}
        old_rows = old.reuse_by_sha() if old else {}
        next_id = old.meta["next_id"] if old else 0

        hashed = []
        for source, rel, path in tqdm(shard.part(files), desc="hashing", unit="img", disable=not progress):
            data = path.read_bytes()
            hashed.append((source, rel, sha256_bytes(data), len(data)))
        scanned: list[tuple[str, str, str, int]] = [row for part in shard.all_gather(hashed) for row in part]
        pending = {sha: (rel, path) for (source, rel, sha, _), (_, _, path) in zip(scanned, files)
                   if sha not in old_rows and sha not in work.shas}
        mine = dict(shard.part(list(pending.items())))
        skipped = _embed_pending(encoder, mine, work, batch_size, progress, max_pixels, on_batch)
        if shard.world_size > 1:
            skipped = [rel for part in shard.all_gather(skipped) for rel in part]
            work.reload()

        # Every rank makes the same plan: which old rows stay, which entries are new (and their ids).
        kept: set[int] = set()
        ordered: list[tuple[Entry, np.ndarray, np.ndarray, int | None]] = []  # entry, folded, foreground, old row
        reused = 0
        for source, rel, sha, size in scanned:
            video = videos.get(rel) if source == "images" else None
            previous = old_keys.get((source, rel))
            if sha in old_rows:
                row = old_rows[sha]
                vector, foreground = old.folded[row], old.arrays.foreground[row]
                reused += 1
            elif sha in work.shas:
                folded, maps, i = work.shas[sha]
                row, vector, foreground = None, folded[i], maps[i]
            else:
                continue  # unreadable, reported in `skipped`
            if previous is not None and previous.sha256 == sha:
                entry = Entry(previous.id, source, rel, sha, size, video)
                row = old.rows[previous.id]
            else:
                entry, next_id = Entry(next_id, source, rel, sha, size, video), next_id + 1
                row = None
            ordered.append((entry, vector, foreground, row))
            if row is not None and entry == old.entries[row]:
                kept.add(row)

        rewrite = old is None or old.meta["index_factory"] != index_factory
        new = ordered if rewrite else [item for item in ordered if item[3] is None or item[3] not in kept]
        final_ids = {item[0].id for item in ordered}
        removed = sum(1 for e in (old.entries if old else []) if e.id not in final_ids)
        added = sum(1 for i in final_ids if i not in (old.rows if old else {}))
        unchanged = (old is not None and not recovered and not new and len(kept) == len(old.entries)
                     and store.images_root(old.meta).resolve() == images_root)
        if not ordered and old is None:
            raise DataError(f"--images {images_root}: no readable JPEG/PNG/WebP images found")
        refs, described = [], ""
        if not unchanged:
            part = shard.part(new)
            if part:
                folded_dim = encoder.dim * (1 + encoder.num_coarse + encoder.num_fine)
                segment = store.write_segment(
                    [e for e, _, _, _ in part], _Rows([v for _, v, _, _ in part], (folded_dim,)),
                    _Rows([f for _, _, f, _ in part], (1, 1)), index_factory, strict=rewrite)
                refs.append({"name": segment.name, "rows": len(segment), "deleted": []})
                described = segment.vectors.describe() + ("" if rewrite else ", for the new segment")
        refs = [ref for part in shard.all_gather(refs) for ref in part]
        if unchanged:
            name = old.name
        elif lead:
            segments = [] if rewrite else old.catalogue_segments()
            dropped = {e.id for row, e in enumerate(old.entries) if row not in kept} if old else set()
            for ref, segment in zip(segments, old.segments if old else []):
                ref["deleted"] += [int(i) for i in segment.ids if int(i) in dropped]
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
                "folded_dim": encoder.dim * (1 + encoder.num_coarse + encoder.num_fine),
                "next_id": next_id,
                "match_threshold": threshold,
            }
            name = store.commit(meta, segments + refs, previous=old.name if old else None).name
        if lead:
            work.clear()
        name = shard.all_gather(name if lead else None)[0]
    tracks = len({e.video.key for e, _, _, _ in ordered if e.video is not None})
    return BuildReport(len(ordered), added, removed, len(pending) - len(skipped),
                       reused, skipped, name, str(store.root), tracks, described)


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
            work.add(shas, encoder.fold_gallery(arrays), arrays.foreground)
        bar.update(len(items[start:start + batch_size]))
        done_batches += 1
        if on_batch is not None:
            on_batch(done_batches)
    bar.close()
    return skipped
