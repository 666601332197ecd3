"""Why an image matched a query: per-part scores and heatmaps over the image.

The foreground map A (METHOD.md, Fine embeddings: the decoder's cross-attention averaged over heads,
tokens and layers, max-rescaled to 1) is drawn over the image, stretched to its own [min, max] for
display (`display_map`); each fine part i is shown as the
same map restricted to its horizontal stripe (the rows `adaptive_max_pool2d` pools for part i),
next to cos(f_v^i, f_t^i). The overlays are PNG data URLs so one JSON answer carries everything
[ours].

A part's cosine alone does not explain: for one query every image's stripes read about the same
(+0.13 to +0.21 for a hit and its misses alike on the demo), because much of a part's cosine is
what any person shares with the sentence. So each part also gets its score relative to the
gallery for this query [ours]: `relative` = (cos - mean) / spread, the mean of that part's cosine
over the gallery (`part_baseline`: up to BASELINE_ROWS rows, evenly spaced) and the parts' typical
standard deviation there (the root mean square of the P parts' own). A part that matches better
than most of the gallery reads positive, one that does not reads negative, and one scale for all
parts keeps a bar's length to what the part adds to the score: a part's own standard deviation
would blow up a stripe where the gallery hardly varies (shoes), and `python -m benchmarks
explain-check`, which measures how often the part that differs between two people is the one whose
bar drops most, found that in 56.7% of cases with each part's own against 67.2% with one scale
(docs/BENCHMARKS.md section 13).
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from partsearch.model.fine import stripe_regions
from partsearch.data.images import MAX_IMAGE_PIXELS, decode_image
from partsearch.search.display import coarse_display
from partsearch.search.searcher import MAX_QUERY_CHARS, Searcher, part_cosines, validate_query


MAX_OVERLAY_HEIGHT = 256  # pixels; keeps the JSON small for large crops [ours]
BASELINE_ROWS = 4096  # gallery rows the relative part scores are measured against [ours]
# A dark-to-bright heat colour scale (black, purple, red, orange, pale yellow).
_HEAT_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_HEAT_RGB = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)
_OVERLAY_ALPHA = 0.6


def heat_colours(values: np.ndarray) -> np.ndarray:
    """`(H, W)` values in [0, 1] -> `(H, W, 3)` float RGB."""
    v = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(v, _HEAT_STOPS, _HEAT_RGB[:, ch]) for ch in range(3)], axis=-1)


def display_map(values: np.ndarray) -> np.ndarray:
    """Stretch a map to [0, 1] by its own minimum and maximum, for display only [ours].

    The foreground map is max-rescaled to 1 (METHOD.md) but, early in training or on easy
    backgrounds, its minimum is often 0.7 or more; drawn as is, the whole crop glows the same and the
    image hides where attention is higher. A constant map is shown as all zeros."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def overlay(image: Image.Image, heat: np.ndarray) -> Image.Image:
    """Blend a `(h, w)` map in [0, 1], upsampled bilinearly to the image, over the image."""
    width, height = image.size
    up = np.asarray(Image.fromarray(heat.astype(np.float32)).resize((width, height), Image.BILINEAR))
    base = np.asarray(image, np.float32)
    alpha = _OVERLAY_ALPHA * np.clip(up, 0.0, 1.0)[..., None]
    mixed = (1 - alpha) * base * 0.7 + alpha * heat_colours(up)
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def part_baseline(gen, emb, rows: int = BASELINE_ROWS) -> tuple[np.ndarray, float]:
    """The mean `(P,)` of each fine part's cosine with the query `emb` over the gallery of `gen`,
    and the parts' typical standard deviation there (the root mean square of the P parts' own), at
    most `rows` rows, evenly spaced, so a million images cost as 4,096."""
    total = len(gen.entries)
    picked = np.unique(np.linspace(0, total - 1, min(total, rows)).round().astype(np.int64))
    _, _, fine = part_cosines(gen.arrays, picked, emb)
    return fine.mean(axis=0), max(float(np.sqrt(np.mean(fine.var(axis=0)))), 1e-6)


def explain(searcher: Searcher, image_id: int, query: str, max_pixels: int = MAX_IMAGE_PIXELS) -> dict:
    """Scores and overlays of image `image_id` for `query`. Raises `errors.UnknownImage` (a
    SearchIndexError, also a KeyError) for an unknown id, FileNotFoundError when its file is gone
    and `UnsafeFile` when the file on disk is not the one indexed (`Searcher.read_image`).

    Returns `{"id", "name", "query", "truncated", "score", "levels", "coarse": [N_c floats],
    "coarse_display": [[label, cosine]] (the tokens as far as they differ), "fine": [{"part",
    "region" (body region of the stripe: head ... feet), "score", "relative" (the score's distance from
    this part's mean over the gallery for the query, in the parts' typical standard deviation there),
    "gallery_mean", "rows": [start, end) in the map,
    "overlay": PNG data URL}] (P), "foreground": PNG data URL, "map_size": [h, w]}`.
    """
    query = validate_query(query, 1)
    entry, row, gen = searcher.entry(image_id)
    emb, truncated = searcher.encode_query(query)
    g, c, f = part_cosines(gen.arrays, np.array([row]), emb)
    score = float(searcher.encoder.fold_query(emb)[0] @ gen.folded[row])
    foreground = np.asarray(gen.arrays.foreground[row], np.float32)
    image, _ = decode_image(searcher.read_image(entry, gen), entry.path, max_pixels)
    if image.height > MAX_OVERLAY_HEIGHT:
        scale = MAX_OVERLAY_HEIGHT / image.height
        image = image.resize((max(1, round(image.width * scale)), MAX_OVERLAY_HEIGHT), Image.BILINEAR)
    fine = []
    shown = display_map(foreground)
    bounds = searcher.encoder.stripe_bounds(foreground.shape[0])
    regions = stripe_regions(len(bounds))
    mean, spread = part_baseline(gen, emb)
    for part, (start, end) in enumerate(bounds):
        stripe = np.zeros_like(shown)
        stripe[start:end] = shown[start:end]
        fine.append({"part": part, "region": regions[part], "score": float(f[0, part]),
                     "relative": float((f[0, part] - mean[part]) / spread), "gallery_mean": float(mean[part]),
                     "rows": [int(start), int(end)], "overlay": png_data_url(overlay(image, stripe))})
    return {
        "id": entry.id, "name": entry.name, "query": query[:MAX_QUERY_CHARS], "truncated": truncated, "score": score,
        "levels": {"global": float(g[0]), "coarse": float(c[0].mean()), "fine": float(f[0].mean())},
        "coarse": [float(x) for x in c[0]], "coarse_display": [[k, v] for k, v in coarse_display([float(x) for x in c[0]])],
        "fine": fine,
        "foreground": png_data_url(overlay(image, shown)),
        "map_size": [int(foreground.shape[0]), int(foreground.shape[1])],
    }
