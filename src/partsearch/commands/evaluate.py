"""`partsearch eval RUN_DIR [--checkpoint best|last|PATH] [--split val|test] [--json OUT]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory written by `partsearch train`")
    parser.add_argument("--checkpoint", default="best", help="best | last | PATH")
    parser.add_argument("--split", default="test", choices=("val", "test"), help="split to evaluate")
    parser.add_argument("--data-root", default=None, help="dataset root, if it moved since training")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def run(args: argparse.Namespace) -> int:
    from partsearch.eval.evaluate import main

    return main(args)
