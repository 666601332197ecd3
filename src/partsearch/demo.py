"""`partsearch demo`: the whole main job on the embedded default, with no dataset and no network.

1. generate SynthPEDES; 2. train `configs/synth_cpu.yaml`; 3. evaluate the test split (with the
per-level rows); 4. index the test gallery; 5. answer three example queries (test captions) and
print the top 5 with hit/miss marks; 6. write `report.html` (metrics, curves, results, heatmaps);
7. print the commands to search the index. Each step reuses what a previous run left unless
`--fresh` is given, so a re-run after an interruption picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from partsearch.cli import invocation
from partsearch.errors import UserError

DEMO_SIZE = (128, 64)
NUM_QUERIES = 3
TOP_K = 5
MARKER = ".partsearch-demo"


def config_path(name: str = "synth_cpu.yaml") -> Path:
    """The repository's `configs/` file (the demo runs from a source checkout, as `make demo` does)."""
    path = Path(__file__).resolve().parents[2] / "configs" / name
    if not path.is_file():
        raise UserError(f"config {path} not found; run the demo from a partsearch source checkout (make demo)")
    return path


def _step(number: int, text: str) -> None:
    print(f"\n== [{number}/7] {text}", flush=True)


def _prepare_out(out: Path, fresh: bool) -> None:
    if fresh and out.exists():
        if not (out / MARKER).exists():
            raise UserError(f"--fresh would delete {out}, which was not made by `partsearch demo`; "
                            f"choose another --out or delete it yourself")
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"{out} exists and was not made by `partsearch demo`; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()


def _link_gallery(records, image_root: Path, gallery: Path) -> dict[str, int]:
    """Hard-link (or copy) the test images into their own folder, the way a user's gallery
    folder would look; returns relative path -> identity."""
    tmp = gallery.with_name(gallery.name + ".tmp")
    if not gallery.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for record in records:
            src = image_root / record.image
            dst = tmp / Path(record.image).name
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        tmp.rename(gallery)
    return {Path(r.image).name: r.pid for r in records}


def _curves(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    loss, r1 = [], []
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "eval" in record:
                r1.append((float(record["epoch"]), float(record["eval"]["t2i"]["R1"])))
            elif "loss" in record:
                loss.append((float(record["step"]), float(record["loss"])))
    return {"training loss": loss, "validation R@1 (%)": r1}


def _pick_queries(records, count: int) -> list[tuple[str, int]]:
    """`count` test captions, from identities spread over the test split (deterministic); with
    fewer identities than `count`, further captions of the same identities."""
    by_pid: dict[int, list[str]] = {}
    for record in records:
        by_pid.setdefault(record.pid, []).extend(record.captions)
    pids = sorted(by_pid)
    step = max(1, len(pids) // count)
    order = pids[::step] + [p for p in pids if p not in pids[::step]]
    picked = []
    for round_ in range(max(len(c) for c in by_pid.values())):
        picked += [(by_pid[pid][round_], pid) for pid in order if round_ < len(by_pid[pid])]
        if len(picked) >= count:
            break
    return picked[:count]


def token_maps(run, record, image_root: Path, parts: dict):
    """The report's view of what each shared coarse token looks at in one test image, each map
    labelled, from `parts["token_regions"]` over the test split, with the body region that takes
    the most of that token's attention relative to its area, or "background" when the token puts
    more of its attention there than the background's share of the area."""
    import numpy as np
    import torch
    from PIL import Image

    from partsearch.data.images import load_image
    from partsearch.data.transforms import build_transforms
    from partsearch.report import TokenMaps
    from partsearch.search.explain import display_map, overlay, png_data_url

    image = load_image(image_root / record.image, run.cfg.data.max_image_pixels)
    transform = build_transforms(run.cfg.data, train=False)
    with torch.no_grad():
        maps = run.model.token_attention(transform(image)[None])[0].numpy()
    favoured = []
    if "token_regions" in parts:
        share = np.array(parts["token_regions"]["attention"])
        area = np.maximum(np.array(parts["token_regions"]["area"]), 1e-9)
        names = parts["token_regions"]["regions"]
        # A token that puts more of its attention on the background than the background's share of
        # the area reads the floor, whatever else it favours: say so.
        favoured = ["background" if share[t, 0] >= area[0] else names[1 + int((share[t, 1:] / area[1:]).argmax())]
                    for t in range(len(share))]
    shown = image.resize((image.width * 2, image.height * 2), Image.NEAREST)
    labelled = [(f"token {j + 1}" + (f": {favoured[j]}" if favoured else ""), png_data_url(overlay(shown, display_map(m))))
                for j, m in enumerate(maps)]
    return TokenMaps(image_url=png_data_url(shown), name=record.image, maps=labelled)


def main(args: argparse.Namespace) -> int:
    import torch

    from partsearch.config import load_config
    from partsearch.data.formats import load_dataset
    from partsearch.data.synth import generate
    from partsearch.data.tokenizers import build_tokenizer
    from partsearch.eval.evaluate import Evaluator, format_table
    from partsearch.eval.parts import diagnose, format_report, summary
    from partsearch.files import write_text_atomic
    from partsearch.report import QueryExample, Report, ResultItem, data_url, write_report
    from partsearch.search.explain import explain
    from partsearch.search.encoder import RunEncoder
    from partsearch.search.index import build_index
    from partsearch.search.searcher import Searcher
    from partsearch.runs import load_run
    from partsearch.train.engine import train

    started = time.perf_counter()
    out = Path(args.out)
    _prepare_out(out, args.fresh)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))

    _step(1, "SynthPEDES: procedural pedestrians whose identity is decided by part attributes")
    data_dir = out / "data"
    if (data_dir / "reid_raw.json").is_file():
        print(f"reusing {data_dir}")
    else:
        generate(data_dir, num_ids=args.ids, seed=0, size=DEMO_SIZE, progress=True)

    _step(2, "train configs/synth_cpu.yaml (MiniLM-L6 text, small CNN image backbone)")
    overrides = [f"data.root={data_dir}", f"train.time_limit_min={args.minutes}", *args.overrides]
    cfg = load_config(config_path(), overrides)
    splits = load_dataset(cfg.data.dataset, cfg.data.root)
    tokenizer = build_tokenizer(cfg.model, cfg.data.max_tokens)
    run_dir = out / "run"
    evaluator = Evaluator(cfg, splits, tokenizer)
    if (run_dir / "best.pt").is_file() and (run_dir / "done").is_file():
        print(f"reusing the trained run in {run_dir}")
    else:
        train(cfg, run_dir, resume=(run_dir / "last.pt").is_file(), evaluator=evaluator,
              splits=splits, tokenizer=tokenizer)
        (run_dir / "done").touch()

    _step(3, "evaluate on the test split (text-to-image, identity level)")
    run = load_run(run_dir, "best", device="cpu")
    results = evaluator(run.model, "test")
    parts = diagnose(run.model, run.cfg, splits.test, splits.image_root, run.tokenizer, "cpu")
    results["parts"] = summary(parts)
    write_text_atomic(out / "test_metrics.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(out / "test_parts.json", json.dumps(parts, indent=1) + "\n")
    print(format_table(results))
    print()
    print(format_report(parts))

    _step(4, "index the test gallery")
    names_to_pid = _link_gallery(splits.test, splits.image_root, out / "gallery")
    encoder = RunEncoder(run_dir, device="cpu", run=run)  # the model is loaded once for index and search
    build_index(encoder, out / "gallery", out / "index")

    _step(5, f"example queries (top {TOP_K}; a hit is an image of the described person)")
    searcher = Searcher(out / "index", encoder=encoder)
    examples = []
    for text, pid in _pick_queries(splits.test, NUM_QUERIES):
        ranking = searcher.query(text, len(searcher)).results
        first_hit = next((r.rank for r in ranking if names_to_pid.get(Path(r.relpath).name) == pid), None)
        print(f'\nquery: "{text}"  (identity {pid}; first image of this person at rank {first_hit})')
        items = []
        for result in ranking[:TOP_K]:
            hit = names_to_pid.get(Path(result.relpath).name) == pid
            print(f"  {result.rank}. {'HIT ' if hit else 'miss'}  {result.score:6.3f}  {result.relpath}")
            why = explain(searcher, result.id, text)
            heatmaps = [("foreground", why["foreground"])]
            heatmaps += [(p["region"], p["overlay"]) for p in why["fine"]]
            scores = [(label, value) for label, value in why["coarse_display"]]
            scores = [(p["region"], p["score"]) for p in why["fine"]] + scores
            image_url = data_url(Path(result.path).read_bytes(), "image/jpeg")
            items.append(ResultItem(rank=result.rank, score=result.score, name=result.relpath, hit=hit,
                                    image_url=image_url, heatmaps=heatmaps, part_scores=scores))
        examples.append(QueryExample(text=text, target=str(pid), results=items, first_hit_rank=first_hit))

    _step(6, "write the report")
    stats = splits.stats()
    report = Report(
        title="partsearch demo: text-based person search on SynthPEDES",
        summary=[
            ("dataset", f"SynthPEDES, {args.ids} identities; train {stats['train']['images']} images / "
                        f"test {stats['test']['images']} images, {stats['test']['captions']} captions"),
            ("model", f"{cfg.model.image_backbone} + {cfg.model.text_backbone} ({cfg.model.text_weights}), "
                      f"d={cfg.model.dim}, {cfg.model.num_coarse} coarse tokens, {cfg.model.num_fine} parts"),
            ("run", str(run_dir)),
            ("wall time", f"{(time.perf_counter() - started) / 60:.1f} min (this invocation)"),
        ],
        metrics=results,
        curves=_curves(run_dir),
        curve_x_labels={"training loss": "step", "validation R@1 (%)": "epoch"},
        queries=examples,
        chance_r1=100 / max(1, stats["test"]["ids"]),
        parts=parts,
        token_maps=token_maps(run, splits.test[0], splits.image_root, parts),
    )
    report_path = write_report(report, out / "report.html")
    print(f"report: {report_path.resolve()}")

    _step(7, "search it yourself")
    cmd = invocation()
    print(f'  {cmd} search {out / "index"} "a woman in a red coat with a black backpack"')
    print(f"  {cmd} serve {out / 'index'}    # then open http://127.0.0.1:8000")
    print(f"  {cmd} eval {run_dir} --split test")
    print(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} min; "
          f"test R@1 {results['t2i']['R1']:.2f}% (chance {100 * 1 / max(1, stats['test']['ids']):.2f}%)")
    return 0
