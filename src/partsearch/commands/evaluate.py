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
    from pathlib import Path

    from partsearch.device import resolve_device
    from partsearch.errors import UserError
    from partsearch.eval.evaluate import evaluate_model, format_table, load_split, write_json
    from partsearch.eval.parts import diagnose, summary
    from partsearch.runs import load_run

    if args.json and (Path(args.json).is_dir() or args.json.endswith(("/", "\\"))):
        raise UserError(f"--json {args.json}: is a folder; give a file name, e.g. "
                        f"{Path(args.json) / f'eval_{args.split}.json'}")
    device = resolve_device(args.device)
    run = load_run(args.run_dir, args.checkpoint, device)
    cfg = run.cfg
    splits, records = load_split(cfg, args.split, args.data_root, run_dir=args.run_dir)
    results = evaluate_model(run.model, run.tokenizer, cfg, records, splits.image_root, device)
    results["parts"] = summary(diagnose(run.model, cfg, records, splits.image_root, run.tokenizer, device))
    split = "TEST" if args.split == "test" else args.split
    print(f"{run.path} on {splits.name} {split}: {results['queries']} queries, {results['gallery']} gallery images")
    print(format_table(results))
    if args.json:
        provenance = {"split": args.split, "checkpoint": str(run.path), "fingerprint": run.fingerprint}
        write_json(args.json, results | provenance)
    return 0
