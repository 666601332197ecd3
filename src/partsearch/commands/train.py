"""`partsearch train --config FILE [--data-root DIR] [--out DIR] [--epochs N] [--max-steps N]
[--resume | --overwrite] [key=value ...]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file (configs/*.yaml)")
    parser.add_argument("--data-root", default=None, help="overrides data.root")
    parser.add_argument("--out", default=None, help="run directory (default runs/<config name>)")
    parser.add_argument("--epochs", type=int, default=None, help="overrides train.epochs")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (its checkpoints and log); without it "
                             "a directory holding a run is refused")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.lr=1e-4")


def run(args: argparse.Namespace) -> int:
    from partsearch.train.engine import main

    return main(args)
