"""`partsearch index RUN_DIR --images DIR --out INDEX_DIR [--index-factory SPEC]`; a DIR written by
`partsearch ingest` is indexed with its video records, so `search --tracks` can return tracks.
`partsearch index --compact --out INDEX_DIR` merges the index's segments and drops deleted rows
(and converts an index of the older format). Under `torchrun --nproc_per_node N -m partsearch
index ...` every rank embeds its share of the new images and writes its own segment; rank 0
publishes them in one commit."""

from __future__ import annotations

import argparse
import os

from partsearch.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", help="a trained run directory (not needed with --compact alone)")
    parser.add_argument("--images", help="folder of pedestrian crops (searched recursively)")
    parser.add_argument("--out", required=True, help="index directory (created or updated)")
    parser.add_argument("--checkpoint", default="best", help="best | last | PATH")
    parser.add_argument(
        "--index-factory", default="auto",
        help="auto (default: exact up to 20,000 images, PCA256,IVF<n>,SQ8 beyond, chosen by size and "
             "reported), Flat (exact), or any FAISS factory string as an approximate first stage "
             "(HNSW32, PCA256,IVF1024,SQ8; exact re-ranking)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images embedded at once (and per checkpointed batch)")
    parser.add_argument("--video-root", action="append", default=[], metavar="DIR",
                        help="a folder whose videos the crops of an ingest gallery may name (repeatable; the "
                             "gallery itself always is one): the service plays only videos inside these")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (under torchrun: the rank's GPU)")
    parser.add_argument("--compact", action="store_true",
                        help="merge all segments into one and drop deleted rows (after indexing, when RUN_DIR "
                             "and --images are given)")


def run(args: argparse.Namespace) -> int:
    from partsearch.search.compaction import compact

    if args.run_dir or args.images:
        if not (args.run_dir and args.images):
            raise UserError("partsearch index needs both RUN_DIR and --images DIR to index images "
                            "(or neither, with --compact, to compact --out)")
        _index(args)
    elif not args.compact:
        raise UserError("partsearch index needs RUN_DIR and --images DIR (or --compact to compact --out)")
    if args.compact and int(os.environ.get("RANK", "0")) == 0:
        before, after = compact(args.out)
        if after is before:
            print(f"index {args.out} ({after.name}): nothing to compact, "
                  f"{len(after.segments)} segment(s), {len(after.entries)} images")
        else:
            print(f"index {args.out} ({after.name}): compacted {len(before.segments)} segment(s) into "
                  f"{len(after.segments)}, {len(after.entries)} images")
    return 0


def _index(args: argparse.Namespace) -> None:
    from partsearch.device import resolve_device
    from partsearch.search.encoder import RunEncoder
    from partsearch.search.index import Shard, build_index
    from partsearch.video.ingest import read_records

    shard = _join_torchrun()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    encoder = RunEncoder(args.run_dir, args.checkpoint, str(resolve_device(args.device, local_rank)))
    # A gallery written by `partsearch ingest` carries a record per crop: its tracks become searchable.
    records = read_records(args.images)
    done = False
    try:
        report = build_index(encoder, args.images, args.out, index_factory=args.index_factory,
                             batch_size=args.batch_size, video_records=records, shard=shard,
                             video_roots=args.video_root)
        done = True
    finally:
        if shard.world_size > 1:
            import torch.distributed as dist

            # On success every rank finishes its last collective before any tears the group
            # down: without the barrier a rank sometimes aborted in teardown ("terminate called
            # without an active exception", exit -6) after the index was committed, about one
            # full test run in four on a loaded 2-core VM. Not after a failure: a peer may still
            # wait in another collective, and the barrier would hang it.
            if done:
                dist.barrier()
            dist.destroy_process_group()
    if shard.rank == 0:
        print(report.summary())


def _join_torchrun():
    """The `Shard` of this process: under torchrun (WORLD_SIZE > 1) it joins the process group
    (gloo: only hashes and names travel between ranks, the images never do)."""
    from partsearch.search.index import Shard

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Shard()
    import torch.distributed as dist

    dist.init_process_group("gloo")
    return Shard(dist.get_rank(), dist.get_world_size())
