"""Single-image writes to an index: an upload (`add_image`) and a delete (`delete_image`), each
a new catalogue (and for an upload a one-row segment), followed by the tiered merge of
`compaction`. The service (`service.py`) calls them under the index's lock.
"""

from __future__ import annotations

from partsearch.data.images import ACCEPTED_FORMATS, decode_image
from partsearch.errors import UnknownImage
from partsearch.files import atomic_path
from partsearch.search.compaction import merge, merge_plan
from partsearch.search.encoder import Encoder
from partsearch.search.index import MAX_IMAGE_PIXELS, sha256_bytes
from partsearch.search.segments import Entry, Generation
from partsearch.search.store import IndexStore, check_model, storage


def add_image(store: IndexStore, encoder: Encoder, data: bytes, name: str,
              max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[Entry, bool, Generation]:
    """Validate, store under uploads/ and index one uploaded image in a segment of its own.
    Returns (entry, added, generation); `added` is False when the same bytes are already indexed.
    Nothing is written when the image is rejected."""
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
        try:
            segment = store.write_segment([entry], folded, arrays.foreground, old.meta["index_factory"])
            gen = store.commit(dict(old.meta, next_id=entry.id + 1),
                               old.catalogue_segments() + [{"name": segment.name, "rows": 1, "deleted": []}],
                               previous=old.name)
        except BaseException:
            (store.uploads / rel).unlink(missing_ok=True)
            raise
        return entry, True, merge(store, gen, merge_plan(gen))


def delete_image(store: IndexStore, image_id: int) -> tuple[Entry, Generation]:
    """Remove one image: its id is added to its segment's deleted ids in a new catalogue. Only a
    file the index owns (an upload, under uploads/) is deleted from disk; a file in the images
    folder belongs to the user and is never touched (the next `partsearch index` of that folder
    adds it again)."""
    with store.lock():
        old = store.load()
        if image_id not in old.rows:
            raise UnknownImage(image_id, store.root)
        entry = old.entries[old.rows[image_id]]
        segments = old.catalogue_segments()
        for ref, segment in zip(segments, old.segments):
            if image_id in segment.ids and image_id not in ref["deleted"]:
                ref["deleted"].append(image_id)
                break
        gen = store.commit(old.meta, segments, previous=old.name)
        if entry.source == "uploads":
            store.image_path(old.meta, entry).unlink(missing_ok=True)
        return entry, merge(store, gen, merge_plan(gen))
