"""SynthPEDES [ours]: a procedural text-based person search dataset in CUHK-PEDES layout.

Each identity is a unique combination of part-level attributes (gender, hair length and colour,
hat, upper body garment, colour and pattern, lower body garment and colour, shoes, carried item,
build). The vocabulary includes words of real CUHK-PEDES-style captions ("a man / a woman",
"long hair", "blue jeans", "navy", "a dark jacket", "light shoes"), and what they name is drawn:
long hair to the shoulders, bald heads, jeans in greyed denim with a seam, navy and light blue.
Attribute values are drawn from Zipf-like weights, so some values (black trousers, white shoes) are
shared by many people and others are rare, which is the situation the commonality-based margin of
METHOD.md addresses; about a third of the identities are single-part mutations of an earlier one, so many
pairs of people differ in one part only.

Every identity gets 2 to 5 images that vary the view (front/back/side), pose, scale, position,
lighting, background clutter, occlusion, blur and noise. Every image gets 2 captions written only
from the attributes visible in it (a logo is on the chest, so it is hidden from the back and the
side; a backpack is hidden from the front; an occluder at the feet hides the shoes; a hat hides a
bald head, and short hair from the front), with several templates, synonyms, shuffled attribute
order and one or two attributes left out; the subject is the person's gender ("man", "lady"...)
three times in four, a neutral noun otherwise, and a dark or light colour is sometimes named by
its shade alone ("dark trousers").

The output is `DIR/reid_raw.json` + `DIR/imgs/synth/*.jpg`, ids from 1 (train ids first), split
80/10/10 by identity with at least 2 identities per split. Each annotation also carries
`attributes = {"person": {...}, "view": ..., "visible": [...], "occluded": bool, "mask": ...}`.
Same arguments give byte-identical files: every identity is drawn from its own seeded generator.

Part ground truth, for diagnostics only (training never reads it): every image has a label mask
`DIR/masks/<its path relative to imgs/, with .png>` (`attributes["mask"]` names it relative to DIR),
same size as the image, uint8: 0 background and occluders, 1 head (hair, hat, face, neck), 2 upper
body (torso, sleeves, arms, hands), 3 lower body (garment and bare legs), 4 shoes, 5 carried item
(`MASK_LABELS`). Each shape is drawn on the mask with its label at the same time as on the image, so
the mask holds what is visible; it is downsampled with nearest-neighbour, the image with a box
filter, so a label may differ from the image at a part's edge by one pixel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np

from partsearch.data.synth.attributes import (COLORS, DENIM, PARTS, SKIN, VIEW_WEIGHTS, VIEWS, make_identities,
                                              normalise, visible_parts)
from partsearch.data.synth.captions import COLOR_SYNONYMS, GENDER_NOUNS, NOUNS, SHADES, make_caption
from partsearch.data.synth.drawing import BACKGROUND, HEAD, ITEM, LOWER, MASK_LABELS, SHOES, UPPER, lower_rgb, render
from partsearch.errors import UserError

__all__ = ["BACKGROUND", "COLORS", "COLOR_SYNONYMS", "DENIM", "GENDER_NOUNS", "HEAD", "ITEM", "LOWER", "MASK_LABELS",
           "NOUNS", "PARTS", "SHADES", "SHOES", "SKIN", "UPPER", "generate", "lower_rgb", "make_caption",
           "make_identities", "normalise", "render", "visible_parts"]


def split_sizes(num_ids: int, held_out: int | None = None) -> tuple[int, int, int]:
    """(train, val, test) identities: val and test get `held_out` each (default 10% of `num_ids`,
    at least 2), train the rest (at least 2). A UserError names the option when they do not fit."""
    if num_ids < 6:
        raise UserError(f"--ids {num_ids} is too few; SynthPEDES needs at least 6 identities (2 per split)")
    held = max(2, round(0.1 * num_ids)) if held_out is None else held_out
    if held < 2 or num_ids - 2 * held < 2:
        raise UserError(f"--held-out {held} with --ids {num_ids}: val and test need at least 2 identities each "
                        f"and train at least 2; give --held-out between 2 and {(num_ids - 2) // 2}")
    return num_ids - 2 * held, held, held


def _identity_images(job: tuple) -> list[dict]:
    """Draw and caption all images of one identity; returns annotation entries with their JPEG bytes."""
    pid, split, person, seed, size = job
    rng = np.random.default_rng([seed, 1, pid])
    skin = SKIN[rng.integers(len(SKIN))]
    entries = []
    for k in range(int(rng.integers(2, 6))):
        view = VIEWS[rng.choice(len(VIEWS), p=VIEW_WEIGHTS)]
        occluded = bool(rng.random() < 0.12)
        image, mask = render(person, skin, view, occluded, size, rng)
        visible = visible_parts(person, view, occluded)
        captions = [make_caption(person, visible, rng) for _ in range(2)]
        buffer = BytesIO()
        image.save(buffer, format="JPEG", quality=92, subsampling=0, optimize=False)
        mask_png = BytesIO()
        mask.save(mask_png, format="PNG", optimize=False)
        entries.append({
            "id": pid,
            "split": split,
            "file_path": f"synth/{pid:05d}_{k}.jpg",
            "captions": captions,
            "processed_tokens": [re.findall(r"[a-z0-9\-]+", c.lower()) for c in captions],
            "attributes": {"person": person, "view": view, "visible": visible, "occluded": occluded,
                           "mask": f"masks/synth/{pid:05d}_{k}.png"},
            "_jpeg": buffer.getvalue(),
            "_mask": mask_png.getvalue(),
        })
    return entries


def generate(out_dir: str | Path, num_ids: int = 1000, seed: int = 0, size: tuple[int, int] = (128, 64),
             progress: bool = False, held_out: int | None = None) -> Path:
    """Write a SynthPEDES dataset to `out_dir` (replacing a previous SynthPEDES there) and return it.
    `held_out` identities go to val and to test each (default 10% of `num_ids`), the rest to train.

    The dataset is built in a temporary directory next to `out_dir` and renamed into place, so an
    interrupted run leaves nothing half-written. One process draws 1,000 identities in seconds.
    """
    out_dir = Path(out_dir)
    n_train, n_val, _ = split_sizes(num_ids, held_out)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                       and not (out_dir / "reid_raw.json").is_file())):
        raise UserError(f"{out_dir} exists and is not a SynthPEDES dataset; choose another --out or remove it")
    start = time.perf_counter()
    people = make_identities(num_ids, seed)
    order = np.random.default_rng([seed, 2]).permutation(num_ids)
    jobs = []
    for rank, index in enumerate(order):
        split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        jobs.append((rank + 1, split, people[index], seed, tuple(size)))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "imgs" / "synth").mkdir(parents=True)
        (tmp / "masks" / "synth").mkdir(parents=True)
        annotations = []
        for done, entries in enumerate(map(_identity_images, jobs), start=1):
            for entry in entries:
                (tmp / "imgs" / entry["file_path"]).write_bytes(entry.pop("_jpeg"))
                (tmp / entry["attributes"]["mask"]).write_bytes(entry.pop("_mask"))
                annotations.append(entry)
            if progress and (done % max(1, num_ids // 10) == 0 or done == num_ids):
                print(f"synth: {done}/{num_ids} identities ({time.perf_counter() - start:.1f} s)",
                      file=sys.stderr, flush=True)
        (tmp / "reid_raw.json").write_text(json.dumps(annotations, sort_keys=True, indent=1) + "\n")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            out_dir.rename(old / "data")
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
