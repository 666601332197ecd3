"""`partsearch train --config FILE [--data-root DIR] [--out DIR] [--epochs N] [--max-steps N]
[--resume | --overwrite] [key=value ...]`."""

from __future__ import annotations

import argparse
import os


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
    """Resolve the config, wire the evaluator (`partsearch.eval`) into the engine, train."""
    from pathlib import Path

    from partsearch.config import load_config
    from partsearch.data.formats import load_dataset
    from partsearch.model.backbones import build_tokenizer
    from partsearch.eval.evaluate import Evaluator
    from partsearch.train.engine import check_config, check_run_dir, train

    overrides = list(args.overrides or [])
    if args.data_root is not None:
        overrides.append(f"data.root={args.data_root}")
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    cfg = load_config(args.config, overrides)
    check_config(cfg)
    run_dir = Path(args.out) if args.out else Path(cfg.train.out_dir) / (cfg.train.name or Path(args.config).stem)
    check_run_dir(run_dir, args.resume, args.overwrite)
    splits = load_dataset(cfg.data.dataset, cfg.data.root, jsonl_file=cfg.data.jsonl_file or None)
    tokenizer = build_tokenizer(cfg.model, cfg.data.max_tokens)
    evaluator = Evaluator(cfg, splits, tokenizer)
    train(cfg, run_dir, resume=args.resume, evaluator=evaluator, splits=splits, tokenizer=tokenizer,
          overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(fit_and_describe(cfg, run_dir, splits))
    return 0


def fit_and_describe(cfg, run_dir, splits) -> str:
    """Fit the run's level weights on val when `train.fit_level_weights` (`eval/fusion.py`) and
    say what was chosen, in one line."""
    from partsearch.eval.fusion import fit_level_weights

    if not cfg.train.fit_level_weights:
        return f"level weights: {tuple(cfg.model.similarity_weights)}, as configured (train.fit_level_weights=false)"
    fitted = fit_level_weights(run_dir, splits)
    if fitted is None:
        return f"level weights: {tuple(cfg.model.similarity_weights)}, as configured (no val split to choose them on)"
    w = fitted["weights"]
    return (f"level weights chosen on val, plain and real-crop shifted (global, coarse, fine) = "
            f"({w[0]:g}, {w[1]:g}, {w[2]:g}): val R@1 {fitted['val_R1']:.2f} (global alone "
            f"{fitted['global_val_R1']:.2f}, the plain sum {fitted['plain_sum_val_R1']:.2f}), shifted "
            f"{fitted['shifted_val_R1']:.2f} (global alone {fitted['global_shifted_val_R1']:.2f}); saved in "
            f"{run_dir}/level_weights.json")
