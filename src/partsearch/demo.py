"""The pieces of `partsearch demo` (`commands/demo.py` runs them in order): the whole main job on
the embedded default, with no dataset and no network.

1. generate SynthPEDES; 2. train `configs/synth_cpu.yaml`; 3. evaluate the test split (with the
per-level rows); 4. index the test gallery; 5. answer three example queries (test captions) and
print the top 5 with hit/miss marks; 6. write `report.html` (metrics, curves, results, heatmaps);
7. print the commands to search the index. With `--video`, a step before the report ingests the
video, indexes its crops and answers sentences with tracks (`partsearch.demo_video`); with
`--run RUN_DIR`, steps 1 and 2 reuse that run and its data instead of generating and training.
Each step reuses what a previous run left unless `--fresh` is given, so a re-run after an
interruption picks up where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from partsearch.errors import UserError

DEMO_SIZE = (128, 64)
NUM_QUERIES = 3
TOP_K = 5
MARKER = ".partsearch-demo"


def config_path(name: str = "synth_cpu.yaml") -> Path:
    """The demo's config as it ships inside the package, so `partsearch demo` runs from any folder
    after `pip install partsearch`, not only from a checkout."""
    from partsearch.config import shipped_config

    return shipped_config(name)


def cut_short(run_dir: Path) -> str | None:
    """The sentence to show when training stopped before its planned steps (the `--minutes`
    safety net), None when it ran them all."""
    try:  # schedule.json, written by the trainer at the end of each `train` call
        schedule = json.loads((Path(run_dir) / "schedule.json").read_text())
    except (OSError, ValueError):
        schedule = None
    if not isinstance(schedule, dict) or not {"step", "planned_steps"} <= set(schedule):
        return None
    if schedule is None or schedule["step"] >= schedule["planned_steps"]:
        return None
    return (f"training stopped at step {schedule['step']} of {schedule['planned_steps']} on the --minutes "
            "time limit; the numbers below are not the demo's")


def red(text: str) -> str:
    """`text` in red on a terminal (ANSI), as it is elsewhere (a log file stays plain)."""
    return f"\033[31m{text}\033[0m" if sys.stdout.isatty() else f"WARNING: {text}"


_STAGE_START: list[float] = []


def step(number: int, text: str, total: int = 7) -> None:
    """Print the heading of stage `number`, after the wall time of the stage before it."""
    import time

    now = time.perf_counter()
    if _STAGE_START:
        print(f"   (stage {number - 1} took {now - _STAGE_START[-1]:.1f} s)", flush=True)
        _STAGE_START.clear()
    _STAGE_START.append(now)
    print(f"\n== [{number}/{total}] {text}", flush=True)


def reused_run(run_dir: Path):
    """`--run RUN_DIR`: (its best checkpoint loaded on the CPU, the data root its config names, a
    relative one read from the run directory), after checking that both are there (UserError
    naming what is missing otherwise)."""
    from partsearch.runs import load_run, run_data_path

    if not (run_dir / "best.pt").is_file():
        raise UserError(f"--run {run_dir}: no best.pt there; give a run directory that `partsearch demo` or "
                        "`partsearch train` finished, or drop --run to train one")
    run = load_run(run_dir, "best", device="cpu")
    data_root = run_data_path(run_dir, run.cfg.data.root)
    if not Path(data_root).is_dir():
        raise UserError(f"--run {run_dir}: its data, {run.cfg.data.root} (data.root in {run_dir / 'config.yaml'}), "
                        "is not there; the demo evaluates and indexes that data's test split")
    return run, data_root


def prepare_out(out: Path, fresh: bool) -> None:
    if fresh and out.exists():
        if not (out / MARKER).exists():
            raise UserError(f"--fresh would delete {out}, which was not made by `partsearch demo`; "
                            f"choose another --out or delete it yourself")
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"{out} exists and was not made by `partsearch demo`; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()


def link_gallery(records, image_root: Path, gallery: Path) -> dict[str, int]:
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


def curves(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
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


def pick_queries(records, count: int) -> list[tuple[str, int]]:
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
    from partsearch.report import TokenMaps
    from partsearch.search.explain import display_map, overlay, png_data_url

    image = load_image(image_root / record.image, run.cfg.data.max_image_pixels)
    with torch.no_grad():
        maps = run.model.token_attention(run.transform(image)[None])[0].numpy()
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
