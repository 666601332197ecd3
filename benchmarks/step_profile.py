"""Where a CPU training step of `configs/synth_cpu.yaml` goes, before and after a speed change,
on the real SynthPEDES the demo trains on (issue 25).

Both variants are the trainer's own parts (`train.step.build_parts`, `Stepper`, the training
loader), built side by side from the same seed, and their steps are timed alternately (A, B, A,
B, ...), so a busy machine slows both alike and their ratio holds. Each step is cut into stages
by forward hooks on the model's own modules, with no code of ours in between: data (the loader's
next batch: decode, augment, tokenise, collate), text backbone, image backbone, heads (the rest of
the model's forward), losses (the criterion), backward, optimizer. `--variant` names what B
`--before` / `--after` name what each variant overrides; by default B is the shipped config and A
the trainer as issue 25 found it: `train.cache_frozen_text=false` (before the frozen text prefix
was cached), `model.attention_dropout=0.1` (dropout on the attention weights, as on the rest) and
torch's own dropout in the heads (`encoders.CPU_WORD_DROPOUT` off around A's
steps; before the keep mask was drawn four elements to a random word). `--same-dropout` gives A
the shipped dropout, for an A/B of another switch.

The cache fills during the first epoch (each caption's frozen layers run once), so B is first
trained one epoch untimed and its cold steps are reported apart; the demo's whole schedule then
costs `cold epoch + (planned - epoch) x warm step`, which the last line compares.

    python -m benchmarks step-profile [--ids 720] [--steps 20] [--threads 2] [--json OUT]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import base_parser, log, positive, report, set_threads
from partsearch.commands.demo import DEMO_IDS, held_out_ids

STAGES = ["data", "text backbone", "image backbone", "heads", "losses", "backward", "optimizer"]
# The step as issue 25 found it: no text cache, and dropout 0.1 on the attention weights too.
BEFORE = ["train.cache_frozen_text=false", "model.attention_dropout=0.1"]


class StageClock:
    """Per-step stage times of one model, from forward hooks on its modules."""

    def __init__(self, model: torch.nn.Module, criterion: torch.nn.Module):
        self.marks: dict[str, float] = {}
        self.model = model
        for name, module in (("model", model), ("text", model.text_backbone), ("image", model.image_backbone),
                             ("losses", criterion)):
            # prepend: the clock starts before any other pre-hook (the text cache's fill counts)
            module.register_forward_pre_hook(self._mark(f"{name}:start"), prepend=True)
            module.register_forward_hook(self._mark(f"{name}:end"), always_call=True)

    def _mark(self, key: str):
        def hook(*_):
            self.marks[key] = time.perf_counter()
        return hook

    def span(self, name: str) -> float:
        return self.marks[f"{name}:end"] - self.marks[f"{name}:start"]


class Variant:
    def __init__(self, label: str, overrides: list[str], data_root: Path, seed: int, word_dropout: bool = True):
        from partsearch.config import load_config
        from partsearch.data.datasets import build_train_loader
        from partsearch.data.formats import load_dataset
        from partsearch.model.backbones import build_image_transform, build_tokenizer
        from partsearch.train.optim import build_scheduler
        from partsearch.train.step import Stepper, build_parts

        self.label = label
        self.word_dropout = word_dropout
        cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "synth_cpu.yaml",
                          [f"data.root={data_root}", "data.num_workers=0", *overrides])
        self.epochs = cfg.train.epochs
        splits = load_dataset(cfg.data.dataset, cfg.data.root, verbose=False)
        tokenizer = build_tokenizer(cfg.model, cfg.data.max_tokens)
        torch.manual_seed(seed)
        self.loader = build_train_loader(cfg, splits.train, splits.image_root, tokenizer,
                                         build_image_transform(cfg.model, cfg.data, train=True), seed=seed)
        model, criterion, optimizer = build_parts(cfg, max(r.pid for r in splits.train) + 1, tokenizer.vocab_size,
                                                  torch.device("cpu"))
        self.clock = StageClock(model, criterion)
        scheduler = build_scheduler(cfg.train, optimizer, len(self.loader))
        self.stepper = Stepper(cfg, model, criterion, optimizer, scheduler, torch.device("cpu"), log=lambda m: None)
        model.train()
        criterion.train()
        self.epoch, self.batches = 0, iter(())
        self.times: dict[str, list[float]] = {stage: [] for stage in [*STAGES, "step"]}

    def _next(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.loader.sampler.set_epoch(self.epoch)
            self.epoch += 1
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self, record: bool = True) -> None:
        from partsearch.model import encoders

        encoders.CPU_WORD_DROPOUT = self.word_dropout
        try:
            self._step(record)
        finally:
            encoders.CPU_WORD_DROPOUT = True

    def _step(self, record: bool) -> None:
        start = time.perf_counter()
        batch = self._next()
        loaded = time.perf_counter()
        images, ids, mask, labels = self.stepper.to_device(batch)
        self.stepper.micro_batch(images, ids, mask, labels)
        stepped = time.perf_counter()
        self.stepper.optimizer_step()
        end = time.perf_counter()
        if not record:
            return
        clock = self.clock
        forward = clock.span("model")
        spans = {"data": loaded - start, "text backbone": clock.span("text"), "image backbone": clock.span("image"),
                 "losses": clock.span("losses"), "optimizer": end - stepped}
        spans["heads"] = forward - spans["text backbone"] - spans["image backbone"]
        spans["backward"] = (stepped - loaded) - forward - spans["losses"]
        spans["step"] = end - start
        for key, value in spans.items():
            self.times[key].append(value)

    def medians(self) -> dict[str, float]:
        return {key: statistics.median(values) for key, values in self.times.items() if values}


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("step-profile", "where a CPU training step of synth_cpu goes, before and after")
    parser.add_argument("--ids", type=positive, default=DEMO_IDS,
                        help=f"SynthPEDES identities (the demo's {DEMO_IDS}: 320 train, 200 val, 200 test)")
    parser.add_argument("--steps", type=positive, default=20, help="timed steps per variant (alternating)")
    parser.add_argument("--before", action="append", default=None, metavar="KEY=VALUE",
                        help="config overrides of A (default: train.cache_frozen_text=false, the step before the cache)")
    parser.add_argument("--after", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides of B (default: none, the shipped config)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="overrides of both, e.g. random text weights of MiniLM's shape where its files are "
                             "missing: model.text_weights=random model.text_width=384 model.text_layers=6 "
                             "model.tokenizer=DIR")
    parser.add_argument("--same-dropout", action="store_true",
                        help="A draws dropout as B does (default: A uses torch's own dropout, as before issue 25)")
    parser.add_argument("--data", default=None, help="an existing SynthPEDES folder (default: generated in a temp dir)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from partsearch.data.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "synth"
        if not args.data:
            generate(root, num_ids=args.ids, seed=0, size=(128, 64), progress=False,
                     held_out=held_out_ids(args.ids, None))
        before = Variant("before", [*args.override, *(BEFORE if args.before is None else args.before)], root, seed=0,
                         word_dropout=args.same_dropout)
        after = Variant("after", [*args.override, *args.after], root, seed=0)
        per_epoch = len(after.loader)
        log(f"step-profile: one cold epoch of {per_epoch} steps for 'after' (fills the text cache)")
        cold = []
        for _ in range(per_epoch):
            t = time.perf_counter()
            after.step(record=False)
            cold.append(time.perf_counter() - t)
        # A is warmed the same way when it caches too (an A/B of another switch), else two steps.
        for _ in range(per_epoch if before.stepper.text_prefix is not None else 2):
            before.step(record=False)
        for i in range(args.steps):
            before.step()
            after.step()
            log(f"  step {i + 1}/{args.steps}: before {before.times['step'][-1]:.3f} s, after {after.times['step'][-1]:.3f} s")
    a, b = before.medians(), after.medians()
    rows: list[dict[str, Any]] = []
    for stage in [*STAGES, "step"]:
        rows.append({"stage": stage, "before ms": round(1000 * a[stage], 1),
                     "before %": round(100 * a[stage] / a["step"], 1), "after ms": round(1000 * b[stage], 1),
                     "after %": round(100 * b[stage] / b["step"], 1),
                     "ratio": round(a[stage] / b[stage], 2) if b[stage] > 0 else None})
    planned = after.epochs * per_epoch
    cold_epoch = sum(cold)
    schedule_before = planned * a["step"]
    schedule_after = cold_epoch + (planned - per_epoch) * b["step"]
    a_dropout = "" if args.same_dropout else " + torch's own dropout"
    notes = [f"A: {' '.join(BEFORE if args.before is None else args.before) or 'shipped'}{a_dropout}; "
             f"B: {' '.join(args.after) or 'shipped'}; both: {' '.join(args.override) or 'shipped'}",
             f"median of {args.steps} alternating steps each; batch {after.loader.batch_size}, {args.threads} threads; "
             f"'after' trained one cold epoch first ({per_epoch} steps, median {statistics.median(cold):.3f} s)",
             f"the demo's {planned} steps: before {schedule_before / 60:.1f} min, after {schedule_after / 60:.1f} min "
             f"(ratio {schedule_before / schedule_after:.2f})"]
    report("step-profile", rows, args, notes, extra={"cold_steps": cold})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
