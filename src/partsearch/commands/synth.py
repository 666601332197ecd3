"""`partsearch synth --out DIR [--ids N] [--held-out N] [--seed S] [--size HxW]`."""

from __future__ import annotations

import argparse

from partsearch.errors import UserError


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size '{text}' is not HxW, e.g. 128x64") from None
    if h < 32 or w < 16:
        raise UserError(f"--size {text} is too small; use at least 32x16")
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (reid_raw.json + imgs/)")
    parser.add_argument("--ids", type=int, default=1000, help="number of identities")
    parser.add_argument("--held-out", type=int, default=None, metavar="N",
                        help="identities in val and in test each (default 10%% of --ids); the rest train")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the same seed writes the same dataset)")
    parser.add_argument("--size", default="128x64", help="image size HxW")


def run(args: argparse.Namespace) -> int:
    import time

    from partsearch.data.formats import format_stats_table, load_dataset
    from partsearch.data.synth import generate

    start = time.perf_counter()
    out = generate(args.out, num_ids=args.ids, seed=args.seed, size=parse_size(args.size), progress=True,
                   held_out=args.held_out)
    seconds = time.perf_counter() - start
    print(format_stats_table("SynthPEDES", load_dataset("SynthPEDES", out, verbose=False).stats()))
    print(f"wrote {out} in {seconds:.1f} s")
    return 0
