"""A single self-contained HTML report: metrics, training curves, example queries, heatmaps.

Everything is embedded (PNG images as data URLs, plots as inline SVG), so the page opens in a
browser with no network access and can be mailed around as one file.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from partsearch.files import write_text_atomic

METRIC_KEYS = ("R1", "R5", "R10", "mAP", "mINP")


@dataclass
class ResultItem:
    """One retrieved image of an example query."""

    rank: int
    score: float
    name: str
    hit: bool
    image_url: str  # a data: URL (PNG or JPEG)
    heatmaps: list[tuple[str, str]] = field(default_factory=list)  # (label, data: URL) overlays
    part_scores: list[tuple[str, float]] = field(default_factory=list)  # (label, cosine)


@dataclass
class QueryExample:
    text: str
    target: str  # the identity the caption describes
    results: list[ResultItem]


@dataclass
class Report:
    title: str
    summary: list[tuple[str, str]]  # (label, value) lines shown at the top
    metrics: dict  # `partsearch eval --json` shape
    curves: dict[str, list[tuple[float, float]]]  # name -> [(x, y)], e.g. "train loss", "val R@1"
    curve_x_labels: dict[str, str] = field(default_factory=dict)
    queries: list[QueryExample] = field(default_factory=list)


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def svg_line_plot(points: list[tuple[float, float]], title: str, x_label: str,
                  width: int = 420, height: int = 220) -> str:
    """An inline SVG line plot with axes, ticks and a title (no plotting library needed)."""
    left, right, top, bottom = 52, 12, 28, 36
    esc = html.escape
    if not points:
        return (f'<svg class="plot" width="{width}" height="{height}" role="img" aria-label="{esc(title)}">'
                f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">{esc(title)}: no data</text></svg>')
    xs = [p[0] for p in points]
    ys = [p[1] for p in points if math.isfinite(p[1])]
    x0, x1 = min(xs), max(xs)
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}"
                    for i, (x, y) in enumerate(points) if math.isfinite(y))
    parts = [f'<svg class="plot" width="{width}" height="{height}" role="img" aria-label="{esc(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" class="ptitle">{esc(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>']
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        parts.append(f'<line x1="{left - 4}" x2="{left}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" class="tick"/>'
                     f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
        xv = x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{top + ph + 14}" text-anchor="middle">{xv:.3g}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">{esc(x_label)}</text>')
    parts.append(f'<path d="{path}" class="line"/>')
    if len(points) <= 40:
        parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" class="dot"/>'
                     for x, y in points if math.isfinite(y))
    parts.append("</svg>")
    return "".join(parts)


def _metrics_table(metrics: dict) -> str:
    rows = []
    named = [("text-to-image", metrics.get("t2i")), ("image-to-text", metrics.get("i2t"))]
    for level, values in (metrics.get("levels") or {}).items():
        named.append((f"t2i, {level}", values))
    for label, values in named:
        if not values:
            continue
        cells = "".join(f"<td>{values.get(k, float('nan')):.2f}</td>" for k in METRIC_KEYS)
        rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    head = "".join(f"<th>{k}</th>" for k in METRIC_KEYS)
    size = ""
    if "queries" in metrics:
        size = f'<p class="note">{metrics["queries"]} queries, {metrics["gallery"]} gallery images; values in %.</p>'
    return f'<table class="metrics"><tr><th></th>{head}</tr>{"".join(rows)}</table>{size}'


def _result_card(item: ResultItem) -> str:
    mark = "hit" if item.hit else "miss"
    bars = "".join(
        f'<div class="bar"><span>{html.escape(lbl)}</span><i style="width:{max(0.0, min(1.0, v)) * 100:.0f}%"></i>'
        f"<b>{v:.2f}</b></div>" for lbl, v in item.part_scores)
    maps = "".join(
        f'<figure><img src="{html.escape(url)}" alt="{html.escape(lbl)} heatmap"><figcaption>{html.escape(lbl)}'
        f"</figcaption></figure>" for lbl, url in item.heatmaps)
    return (f'<div class="card {mark}"><div class="head">#{item.rank} <span class="{mark}">'
            f'{"&#10003; hit" if item.hit else "&#10007; miss"}</span> {item.score:.3f}</div>'
            f'<img class="result" src="{html.escape(item.image_url)}" alt="{html.escape(item.name)}">'
            f'<div class="name">{html.escape(item.name)}</div>'
            f'<div class="maps">{maps}</div><div class="bars">{bars}</div></div>')


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{margin-bottom:4px} .summary td{padding:2px 12px 2px 0}
table.metrics{border-collapse:collapse;margin:8px 0} table.metrics td,table.metrics th{border:1px solid #ccc;padding:4px 10px;text-align:right}
.plots{display:flex;flex-wrap:wrap;gap:16px} .plot text{font-size:11px} .plot .ptitle{font-size:13px;font-weight:600}
.plot .frame{fill:none;stroke:#999} .plot .line{fill:none;stroke:#1f6feb;stroke-width:2} .plot .dot{fill:#1f6feb} .plot .tick{stroke:#999}
.query{margin:18px 0;padding:10px;border-top:1px solid #ddd} .results{display:flex;gap:10px;flex-wrap:wrap}
.card{border:2px solid #ccc;border-radius:6px;padding:6px;width:190px;font-size:12px} .card.hit{border-color:#2da44e} .card.miss{border-color:#cf222e}
.card img.result{height:128px;display:block;margin:4px auto;image-rendering:pixelated}
span.hit{color:#2da44e;font-weight:600} span.miss{color:#cf222e;font-weight:600}
.maps{display:flex;flex-wrap:wrap;gap:2px} .maps figure{margin:0;text-align:center} .maps img{height:64px;image-rendering:pixelated} .maps figcaption{font-size:9px}
.bar{display:flex;align-items:center;gap:4px;font-size:10px} .bar span{width:44px} .bar i{display:inline-block;height:8px;background:#1f6feb;max-width:90px} .bar b{font-weight:400}
.note{color:#666;font-size:12px}
"""


def render_report(report: Report) -> str:
    esc = html.escape
    summary = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in report.summary)
    plots = "".join(svg_line_plot(pts, name, report.curve_x_labels.get(name, "step"))
                    for name, pts in report.curves.items())
    queries = []
    for q in report.queries:
        cards = "".join(_result_card(r) for r in q.results)
        queries.append(f'<div class="query"><p><b>Query:</b> &ldquo;{esc(q.text)}&rdquo; '
                       f'<span class="note">(describes identity {esc(q.target)})</span></p>'
                       f'<div class="results">{cards}</div></div>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(report.title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{esc(report.title)}</h1>"
            f'<table class="summary">{summary}</table>'
            f"<h2>Test metrics</h2>{_metrics_table(report.metrics)}"
            f'<h2>Training</h2><div class="plots">{plots}</div>'
            f"<h2>Example queries</h2><p class=\"note\">Each result shows the image, its foreground map and "
            f"part-stripe heatmaps, and the per-part cosine between the query's fine tokens and the "
            f"image's stripes.</p>{''.join(queries)}</body></html>")


def write_report(report: Report, path: str | Path) -> Path:
    """Render and write atomically."""
    return write_text_atomic(path, render_report(report))
