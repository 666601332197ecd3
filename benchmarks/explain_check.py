"""Do the part bars explain? (issue 25, item 5)

For people of the SynthPEDES test split, a caption names the colour of one region ("a red tee",
"brown shorts", "white shoes"). The person is drawn twice with the same pose, view, skin and
background (the generator's own `render` with the same random state): once as described and once
with only that region's colour changed. Both images are scored against the caption by the search
code's own explanation (`search.explain.part_baseline` and `searcher.part_cosines`, the gallery of
INDEX_DIR as the baseline), and the check asks whether the stripe whose bar drops most belongs to
the changed region (upper colour: shoulders or torso; lower colour: hips or legs; shoes: feet).
It reports the share of such cases per region, for the relative bars the page and the report show
(relative = (cos - the stripe's gallery mean) / the stripes' typical gallery standard deviation,
one scale per query) and for the raw cosines. With one scale the two rank a pair's drops alike; the
raw column stays so that a change of the bars' formula shows against it.

    python -m benchmarks explain-check INDEX_DIR --data SYNTH_DIR [--cases 60] [--json OUT]

INDEX_DIR is an index of the run to check (the demo writes runs/demo/index, over the test split of
runs/demo/data).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.common import base_parser, log, positive, report

REGION_STRIPES = {"upper_color": ("shoulders", "torso"), "lower_color": ("hips", "legs"), "shoe_color": ("feet",)}
NAMED = {"upper_color": "upper", "lower_color": "lower", "shoe_color": "shoes"}


def _other_colour(person: dict, part: str, rng: np.random.Generator) -> str:
    """Another colour the generator can draw for `part` of `person` (jeans come only in denim)."""
    from partsearch.data.synth import DENIM, PARTS

    palette = DENIM if part == "lower_color" and person.get("lower_type") == "jeans" else PARTS[part]
    choices = [c for c in palette if c != person[part]]
    return choices[int(rng.integers(len(choices)))]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("explain-check", "does the part whose colour differs get the bar that drops most?")
    parser.add_argument("index", help="an index of the run to check (e.g. runs/demo/index)")
    parser.add_argument("--data", required=True, help="the SynthPEDES folder (e.g. runs/demo/data)")
    parser.add_argument("--cases", type=positive, default=60, help="image pairs per region")
    args = parser.parse_args(argv)

    from partsearch.data.synth import SKIN, make_caption, render, visible_parts
    from partsearch.model.fine import stripe_regions
    from partsearch.search.explain import part_baseline
    from partsearch.search.searcher import Searcher, part_cosines

    searcher = Searcher(args.index)
    gen = searcher.current()
    encoder = searcher.encoder
    annotations = json.loads((Path(args.data) / "reid_raw.json").read_text())
    people = {}
    for a in annotations:
        if a["split"] == "test":
            people.setdefault(a["id"], a["attributes"]["person"])
    size = tuple(json.loads((Path(args.data) / "synth.json").read_text())["size"]) \
        if (Path(args.data) / "synth.json").is_file() else (128, 64)
    rng = np.random.default_rng(0)
    rows, details = [], {}
    for part, stripes in REGION_STRIPES.items():
        found = {"relative": 0, "cosine": 0}
        cases = 0
        for n in range(args.cases):
            pid = sorted(people)[n % len(people)]
            person = dict(people[pid])
            changed = dict(person, **{part: _other_colour(person, part, rng)})
            seed = int(rng.integers(1 << 30))
            skin = SKIN[seed % len(SKIN)]
            images = [render(p, skin, "front", False, size, np.random.default_rng(seed))[0] for p in (person, changed)]
            visible = visible_parts(person, "front", False)
            captions = (make_caption(person, visible, np.random.default_rng([seed, k])) for k in range(20))
            caption = next((c for c in captions if person[part] in c.lower()), None)
            if caption is None:
                continue  # no caption of this person names that colour
            emb = encoder.encode_images(images)
            text, _ = encoder.encode_texts([caption])
            _, _, fine = part_cosines(emb, np.arange(2), text)
            mean, std = part_baseline(gen, text)
            names = stripe_regions(fine.shape[1])
            drops = {"cosine": fine[0] - fine[1], "relative": (fine[0] - fine[1]) / std}
            for kind, drop in drops.items():
                if names[int(np.argmax(drop))] in stripes:
                    found[kind] += 1
            cases += 1
        if not cases:
            continue
        details[part] = found
        rows.append({"region": NAMED[part], "stripes": "/".join(stripes), "cases": cases,
                     "relative bar drops most %": round(100 * found["relative"] / cases, 1),
                     "raw cosine drops most %": round(100 * found["cosine"] / cases, 1)})
        log(f"explain-check {part}: {found} of {cases}")
    total = sum(r["cases"] for r in rows)
    rows.append({"region": "all", "stripes": "", "cases": total,
                 "relative bar drops most %": round(100 * sum(d["relative"] for d in details.values()) / total, 1),
                 "raw cosine drops most %": round(100 * sum(d["cosine"] for d in details.values()) / total, 1)})
    notes = [f"index {args.index}: its run's encoder; baseline = the index's gallery ({len(gen.entries)} images)",
             "chance is 1/3 (upper, lower: 2 of 6 stripes) and 1/6 (shoes)"]
    report("explain-check", rows, args, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
