"""`partsearch demo [--out runs/demo] [--minutes M] [--fresh]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="demo directory (default runs/demo)")
    parser.add_argument("--minutes", type=float, default=6.0, help="training time budget in minutes")
    parser.add_argument("--fresh", action="store_true", help="start over instead of reusing results")


def run(args: argparse.Namespace) -> int:
    from partsearch.demo import main

    return main(args)
