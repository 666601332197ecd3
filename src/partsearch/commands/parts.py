"""`partsearch parts RUN_DIR [--checkpoint best|last|PATH] [--split test] [--data-root DIR] [--json OUT]`:
do the shared tokens stand for body parts? (`partsearch.eval.parts`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory written by `partsearch train`")
    parser.add_argument("--checkpoint", default="best", help="best | last | PATH (default: best)")
    parser.add_argument("--split", default="test", choices=("val", "test"), help="split to diagnose (default: test)")
    parser.add_argument("--data-root", default=None, help="dataset root, if it moved since training")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write every figure as JSON")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")


def run(args: argparse.Namespace) -> int:
    import json

    from partsearch.device import resolve_device
    from partsearch.eval.evaluate import load_split
    from partsearch.eval.parts import diagnose, format_report, summary
    from partsearch.files import write_text_atomic
    from partsearch.runs import load_run

    device = resolve_device(args.device)
    run_ = load_run(args.run_dir, args.checkpoint, device)
    splits, records = load_split(run_.cfg, args.split, args.data_root, run_dir=args.run_dir)
    diag = diagnose(run_.model, run_.cfg, records, splits.image_root, run_.tokenizer, device)
    print(f"{run_.path} on {splits.name} {args.split}")
    print(format_report(diag))
    if args.json:
        write_text_atomic(args.json, json.dumps(diag | {"summary": summary(diag)}, indent=1) + "\n")
    return 0
