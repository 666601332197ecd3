"""Compaction of an index: merging segments into one and dropping deleted rows (a new segment, a
new catalogue), by the tiered policy after each upload or delete, or all at once
(`partsearch index --compact`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from partsearch.errors import SearchIndexError
from partsearch.search.segments import Generation, RowStack
from partsearch.search.store import IndexStore

# Tiered compaction [ours, after Lucene's merge policy]: segments are grouped by the decimal order
# of their live rows, and MERGE_FACTOR segments of one group are merged into one, so each row is
# rewritten about log10(G) times; a segment with half its rows deleted is rewritten too.
MERGE_FACTOR = 10


def merge_plan(gen: Generation, full: bool = False) -> list[int]:
    """Which segments (positions in `gen.segments`) to merge: with `full` all of them when there
    is more than one or any deleted row; otherwise the tiered policy (MERGE_FACTOR segments of
    the same decimal order of live rows; else the segments with half their rows deleted)."""
    refs = gen.catalogue_segments()
    if full:
        return list(range(len(refs))) if len(refs) > 1 or any(r["deleted"] for r in refs) else []
    tiers: dict[int, list[int]] = {}
    for i, ref in enumerate(refs):
        tiers.setdefault(int(math.log10(max(1, ref["rows"] - len(ref["deleted"])))), []).append(i)
    for tier in sorted(tiers):
        if len(tiers[tier]) >= MERGE_FACTOR:
            return tiers[tier][:MERGE_FACTOR]
    return [i for i, ref in enumerate(refs) if 2 * len(ref["deleted"]) >= ref["rows"]]


def merge(store: IndexStore, gen: Generation, chosen: list[int],
           on_written: Callable[[str], None] | None = None) -> Generation:
    """Merge segments `chosen` of `gen` into one new segment, in place of the first of them,
    without their deleted rows (caller holds `lock`)."""
    if not chosen:
        return gen
    live = gen.folded.rows
    foreground = gen.arrays.foreground
    rows = [gen.segments[i].entries[r] for i in chosen for r in live[i]]
    segment = store.write_segment(
        rows, RowStack([gen.folded.parts[i] for i in chosen], [live[i] for i in chosen]),
        RowStack([foreground.parts[i] for i in chosen], [live[i] for i in chosen]), gen.meta["index_factory"])
    if on_written is not None:
        on_written(segment.name)
    refs = gen.catalogue_segments()
    merged = {"name": segment.name, "rows": len(segment), "deleted": []}
    segments = [merged if i == chosen[0] else ref for i, ref in enumerate(refs) if i == chosen[0] or i not in chosen]
    return store.commit(gen.meta, segments, previous=gen.name)


def compact(index_dir: str | Path, full: bool = True,
            on_written: Callable[[str], None] | None = None) -> tuple[Generation, Generation]:
    """Merge the segments of the index at `index_dir` (all into one with `full`, else by the
    tiered policy) and drop deleted rows; an index of the older format is converted. Returns the
    generations before and after (the same when there was nothing to merge). Killed half-way,
    the previous generation stays live and the next writer removes the unnamed segment."""
    store = IndexStore(index_dir)
    store.current_name()  # a clear error when there is no index there
    with store.lock():
        gen = store.load_for_update()
        if gen is None:
            raise SearchIndexError(f"index {store.root} has no readable generation; re-run `partsearch index` "
                                   f"RUN_DIR --images DIR --out {store.root} to rebuild it")
        return gen, merge(store, gen, merge_plan(gen, full), on_written)
