"""`partsearch demo [--out runs/demo] [--minutes M] [--fresh] [--ids N] [key=value ...]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="demo directory")
    parser.add_argument("--minutes", type=float, default=6.0, help="training time budget in minutes")
    parser.add_argument("--fresh", action="store_true", help="start over instead of reusing results")
    parser.add_argument("--ids", type=int, default=400, help="SynthPEDES identities")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides on top of configs/synth_cpu.yaml, e.g. train.epochs=2")


def run(args: argparse.Namespace) -> int:
    from partsearch.demo import main

    return main(args)
