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
from partsearch.search.threshold import describe as describe_threshold

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
    # (region, score relative to the gallery for this query, in the parts' typical standard deviation
    # there; search/explain.py)
    relative_parts: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class QueryExample:
    text: str
    target: str  # the identity the caption describes
    results: list[ResultItem]
    first_hit_rank: int | None = None  # rank of the first image of the described person


@dataclass
class TokenMaps:
    """What each shared coarse token looks at in one image: (label, data: URL) overlays."""

    image_url: str
    name: str
    maps: list[tuple[str, str]]


@dataclass
class VideoAnswer:
    """One track answering a sentence: its best crop and the frame it was cut from (data: URLs;
    `frame_url` None when the video could not be read there)."""

    rank: int
    score: float  # the track's score (`VideoQuery.aggregate` of its crops' scores)
    video: str  # the video's file name
    track: int
    crops: int
    start: float  # seconds: the track's first and last crop
    end: float
    time: float  # seconds: the best crop
    frame: int
    box: tuple[int, int, int, int]
    crop_url: str
    frame_url: str | None
    best_score: float = float("nan")  # s(v, t) of the best crop
    # [(start, end)] seconds, one per visit when the person left the view and came back
    visits: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class VideoQuery:
    text: str
    answers: list[VideoAnswer]
    aggregate: str  # how a track's score is made from its crops' scores
    match_threshold: float | None = None  # for a best crop's score
    match_rule: str | None = None  # what the threshold is (`search.threshold.rule`)


@dataclass
class VideoSection:
    """`partsearch demo --video`: sentences answered with tracks of the given videos."""

    videos: list[str]
    summary: str
    queries: list[VideoQuery]


@dataclass
class Report:
    title: str
    summary: list[tuple[str, str]]  # (label, value) lines shown at the top
    metrics: dict  # `partsearch eval --json` shape
    curves: dict[str, list[tuple[float, float]]]  # name -> [(x, y)], e.g. "train loss", "val R@1"
    curve_x_labels: dict[str, str] = field(default_factory=dict)
    queries: list[QueryExample] = field(default_factory=list)
    chance_r1: float | None = None  # R@1 of a random ranking, in %
    parts: dict | None = None  # `partsearch.eval.parts.diagnose` output
    token_maps: TokenMaps | None = None
    video: VideoSection | None = None
    warning: str | None = None  # shown in red above everything (a demo cut short by its time limit)
    level_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (global, coarse, fine) the scores use


def _score_note(weights: tuple[float, float, float]) -> str:
    """What an example's score is, with the level weights it uses."""
    w_g, w_c, w_f = (float(w) for w in weights)
    top = abs(w_g) + abs(w_c) + abs(w_f)
    return (f"The score is {w_g:g} x the global cosine + {w_c:g} x the mean over coarse tokens + {w_f:g} x the "
            f"mean over fine parts (the level weights), so it lies in [{-top:g}, {top:g}].")


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


METRIC_HELP = ("R1/R5/R10: share of text queries whose first correct image is ranked within the top "
               "1/5/10. mAP: mean average precision over all correct images. mINP: mean inverse "
               "negative penalty, how early the LAST correct image comes (Ye et al., 2021).")


def _metrics_table(metrics: dict, chance_r1: float | None = None) -> str:
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
        size = f'{metrics["queries"]} queries, {metrics["gallery"]} gallery images; values in %. '
    if chance_r1 is not None:
        size += f"A random ranking scores R1 = {chance_r1:.2f}%. "
    note = f'<p class="note">{html.escape(size)}{html.escape(METRIC_HELP)}</p>'
    return f'<table class="metrics"><tr><th></th>{head}</tr>{"".join(rows)}</table>{note}'


def _bar(label: str, value: float, scale: float = 1.0, unit: str = "") -> str:
    """`value` in [-scale, scale] (a cosine, or a relative score in typical standard deviations with
    scale 3) as a bar on a fixed track whose middle is 0."""
    v = max(-1.0, min(1.0, value / scale))
    left, width = (50.0, 50.0 * v) if v >= 0 else (50.0 + 50.0 * v, -50.0 * v)
    sign = "pos" if v >= 0 else "neg"
    number = f"{value:+.1f}{unit}" if unit else f"{value:+.2f}"
    return (f'<div class="bar"><span>{html.escape(label)}</span><span class="track"><i class="{sign}" '
            f'style="left:{left:.1f}%;width:{width:.1f}%"></i></span><b>{html.escape(number)}</b></div>')


def _result_card(item: ResultItem) -> str:
    mark = "hit" if item.hit else "miss"
    bars = "".join(_bar(lbl, v, 3.0, " sd") for lbl, v in item.relative_parts)
    bars += "".join(_bar(lbl, v) for lbl, v in item.part_scores)
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
.card{width:260px}
.maps{display:grid;grid-template-columns:repeat(4,1fr);gap:3px;margin:4px 0} .maps figure{margin:0;text-align:center} .maps img{width:100%;image-rendering:pixelated} .maps figcaption{font-size:10px}
.bar{display:flex;align-items:center;gap:4px;font-size:11px;margin:1px 0} .bar span:first-child{width:68px}
.bar .track{position:relative;display:inline-block;width:120px;height:9px;background:#eee;border-left:1px solid #ccc;border-right:1px solid #ccc}
.bar .track::after{content:"";position:absolute;left:50%;top:-2px;bottom:-2px;border-left:1px solid #888}
.bar i{position:absolute;top:0;height:9px} .bar i.pos{background:#1f6feb} .bar i.neg{background:#cf222e} .bar b{font-weight:400}
.note{color:#666;font-size:12px} .note.weak{color:#9a6700}
table.diag{border-collapse:collapse;margin:8px 0;font-size:13px} table.diag td,table.diag th{border:1px solid #ccc;padding:3px 8px;text-align:right}
table.diag td.ok{background:#dafbe1} table.diag td.bad{background:#ffebe9} table.diag td.best{font-weight:700;outline:2px solid #1f6feb}
.track{display:flex;width:fit-content;max-width:100%;gap:12px;align-items:flex-start;margin:8px 0;padding:6px;border:1px solid #ddd;border-radius:6px}
.track figure{margin:0;font-size:11px;color:#666} .track .crop img{height:160px;display:block} .track .frame img{width:480px;max-width:100%;display:block}
.track .facts{width:170px;font-size:13px} .track .facts .head{font-size:15px;margin-bottom:4px}
.tokens{display:flex;gap:8px;flex-wrap:wrap;align-items:flex-end} .tokens figure{margin:0;text-align:center;font-size:11px} .tokens img{height:160px;image-rendering:pixelated}
"""


# Targets of the part diagnostics (issue "the parts must form"; `floor_peaks` is ours): figure -> (test, text).
TARGETS = {
    "coarse_token_cos": (lambda v: v <= 0.5, "<= 0.50 (1.00: the tokens are copies)"),
    "fine_text_token_cos": (lambda v: v <= 0.5, "<= 0.50 (1.00: copies)"),
    "coarse_margin": (lambda v: v >= 0.10, ">= 0.10 (0.00: token j of the image matches every text token alike)"),
    "fine_margin": (lambda v: v >= 0.10, ">= 0.10 (0.00: stripe i matches every text part alike)"),
    "foreground_contrast": (lambda v: v >= 2.0, ">= 2.0 (1.0: the map does not tell the person from the floor)"),
    "background_bound": (lambda v: v <= 1.0, "<= 1.0 (above: a part token favours the floor over the person)"),
    "floor_peaks": (lambda v: v <= 0.10, "<= 0.10 (above: in more than 1 image of 10 the heatmap is brightest on the floor)"),
}
_FIGURE_NAMES = {
    "coarse_token_cos": "coarse tokens: mean cosine between different tokens",
    "fine_text_token_cos": "text fine tokens: mean cosine between different tokens",
    "coarse_margin": "coarse correspondence: diagonal margin",
    "fine_margin": "fine correspondence (stripe i vs text part i): diagonal margin",
    "foreground_contrast": "foreground map: mean on the person / mean off it",
    "background_bound": "coarse tokens: the most background-bound token's share there / the background's area",
    "floor_peaks": "foreground map: share of images whose brightest cell holds none of the person",
}


def _parts_section(parts: dict, token_maps: TokenMaps | None) -> str:
    from partsearch.eval.parts import summary

    esc = html.escape
    s = summary(parts)
    rows = []
    for key, name in _FIGURE_NAMES.items():
        if key not in s:
            continue
        test, target = TARGETS[key]
        ok = "ok" if test(s[key]) else "bad"
        rows.append(f'<tr><th style="text-align:left">{esc(name)}</th><td class="{ok}">{s[key]:.3f}</td>'
                    f'<td style="text-align:left">{esc(target)}</td></tr>')
    out = [f'<table class="diag"><tr><th></th><th>measured</th><th>target</th></tr>{"".join(rows)}</table>']
    stripes = parts["stripes"]
    if "attributes" in parts:
        aucs = parts["attributes"]["fine"]["image_image"]
        head = "".join(f"<th>{esc(n)}</th>" for n in stripes)
        body = []
        for attr, values in aucs.items():
            best = max(range(len(values)), key=lambda i: -1 if values[i] != values[i] else values[i])
            cells = "".join(f'<td class="{"best" if i == best else ""}">{v:.2f}</td>' for i, v in enumerate(values))
            body.append(f"<tr><th>{esc(attr.replace('_', ' '))}</th>{cells}</tr>")
        order = "yes" if s.get("stripes_head_to_feet") else "no"
        out.append("<h3>Which stripe knows which attribute</h3>"
                   f'<p class="note">AUC of the stripe\'s cosine between two images of DIFFERENT people for '
                   f'"they wear the same colour" (0.50 = chance, 1.00 = perfect; hair colour only between people with '
                   f"equally long hair and no hat); the best stripe per attribute is "
                   f"outlined. Best stripes run head to feet: <b>{order}</b>.</p>"
                   f'<table class="diag"><tr><th></th>{head}</tr>{"".join(body)}</table>')
    matrix = parts["correspondence"]["fine"]["matrix"]
    head = "".join(f"<th>text {i + 1}</th>" for i in range(len(matrix)))
    body = "".join(f"<tr><th>{esc(stripes[p])}</th>" + "".join(
        f'<td class="{"best" if q == p else ""}">{v:.3f}</td>' for q, v in enumerate(row)) + "</tr>"
        for p, row in enumerate(matrix))
    out.append("<h3>Stripe i against text part i</h3>"
               '<p class="note">Mean cosine of image stripe (row) and the caption\'s fine token (column) over '
               "matched pairs; the diagonal should stand out.</p>"
               f'<table class="diag"><tr><th></th>{head}</tr>{body}</table>')
    if token_maps is not None:
        figures = "".join(f'<figure><img src="{esc(url)}" alt="{esc(label)}"><figcaption>{esc(label)}</figcaption>'
                          f"</figure>" for label, url in token_maps.maps)
        out.append(f"<h3>What each shared token looks at</h3><p class=\"note\">The cross-attention of each coarse "
                   f"token over {esc(token_maps.name)} (brighter = more). Each label names the body region the token "
                   f"favours most over the test split, as its share of the token's attention divided by the "
                   f"region's share of the image area; \"background\" when the token gives the background more "
                   f'than its share of the area.</p><div class="tokens"><figure><img src="{esc(token_maps.image_url)}" '
                   f'alt="image"><figcaption>image</figcaption></figure>{figures}</div>')
    if "token_regions" in parts:
        regions = parts["token_regions"]
        head = "".join(f"<th>{esc(r)}</th>" for r in regions["regions"])
        rows = [(f"token {t + 1}", row) for t, row in enumerate(regions["attention"])]
        body = "".join(f"<tr><th>{label}</th>" + "".join(f"<td>{v:.2f}</td>" for v in row) + "</tr>"
                       for label, row in rows)
        body += "<tr><th>area</th>" + "".join(f"<td>{v:.2f}</td>" for v in regions["area"]) + "</tr>"
        out.append('<p class="note">Share of each coarse token\'s attention per region (rows sum to 1), against '
                   'the region\'s share of the image area (last row): a token that reads a part is far above '
                   'the area share there. Background tokens, if the model has them, own what the parts do not '
                   f'read and are not part of any embedding.</p><table class="diag"><tr><th></th>{head}</tr>{body}</table>')
    return "".join(out)


def clock(seconds: float) -> str:
    """83.4 -> "1:23.4", as the web page writes a time in a video."""
    minutes = int(seconds // 60)
    return f"{minutes}:{seconds - 60 * minutes:04.1f}"


def _video_answer(a: VideoAnswer) -> str:
    esc = html.escape
    seen = ", ".join(f"{clock(start)}&ndash;{clock(end)}" for start, end in (a.visits or [(a.start, a.end)]))
    x1, y1, x2, y2 = a.box
    frame = (f'<figure class="frame"><img src="{esc(a.frame_url)}" alt="frame {a.frame} of {esc(a.video)} with the '
             f'box of track {a.track}"><figcaption>frame {a.frame} at {clock(a.time)}, box ({x1}, {y1})&ndash;({x2}, '
             f"{y2})</figcaption></figure>" if a.frame_url else
             f'<p class="note">frame {a.frame} at {clock(a.time)}: the video cannot be read there</p>')
    return (f'<div class="track"><figure class="crop"><img src="{esc(a.crop_url)}" alt="best crop of track '
            f'{a.track}"><figcaption>best crop</figcaption></figure><div class="facts">'
            f'<div class="head">#{a.rank} <b>{a.score:.3f}</b></div>'
            f"<div>{esc(a.video)}, track {a.track}</div>"
            f"<div>seen {seen}</div><div>{a.crops} crops</div></div>{frame}</div>")


def _video_section(section: VideoSection) -> str:
    esc = html.escape
    out = [f"<h2>Searching {esc(', '.join(section.videos))}</h2>"
           f'<p class="note">{esc(section.summary)}. People were detected and tracked by <code>partsearch ingest</code>; '
           "each answer is a track (one person as far as the tracker can tell) with its score, its best crop, "
           "when it was seen, and the frame of the best crop with its box. The model was trained on SynthPEDES "
           "drawings, so on real footage expect rough answers.</p>"]
    for q in section.queries:
        how = {"max": "the best", "mean-top3": "the mean of the three best"}.get(q.aggregate, q.aggregate)
        answers = "".join(_video_answer(a) for a in q.answers) or '<p class="note">no track</p>'
        if q.match_threshold is not None and q.answers and q.answers[0].best_score < q.match_threshold:
            answers = (f'<p class="note weak">No track is a good match: the best crop scores '
                       f"{q.answers[0].best_score:.3f}, below {q.match_threshold:.3f}, "
                       f"{esc(describe_threshold(q.match_rule))}.</p>{answers}")
        out.append(f'<div class="query"><p><b>Query:</b> &ldquo;{esc(q.text)}&rdquo; <span class="note">(a track\'s '
                   f"score is {esc(how)} of its crops' scores)</span></p>{answers}</div>")
    return "".join(out)


def render_report(report: Report) -> str:
    esc = html.escape
    summary = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in report.summary)
    plots = "".join(svg_line_plot(pts, name, report.curve_x_labels.get(name, "step"))
                    for name, pts in report.curves.items())
    queries = []
    for q in report.queries:
        cards = "".join(_result_card(r) for r in q.results)
        found = ""
        if q.first_hit_rank is not None:
            found = f"; the first image of this person is ranked {q.first_hit_rank}"
        queries.append(f'<div class="query"><p><b>Query:</b> &ldquo;{esc(q.text)}&rdquo; '
                       f'<span class="note">(describes identity {esc(q.target)}{esc(found)})</span></p>'
                       f'<div class="results">{cards}</div></div>')
    video = _video_section(report.video) if report.video is not None else ""
    parts = ""
    if report.parts is not None:
        parts = f"<h2>Do the parts form?</h2>{_parts_section(report.parts, report.token_maps)}"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(report.title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{esc(report.title)}</h1>"
            + (f'<p class="warning" style="color:#c00;font-weight:bold">{esc(report.warning)}</p>'
               if report.warning else "")
            + f'<table class="summary">{summary}</table>'
            f"<h2>Test metrics</h2>{_metrics_table(report.metrics, report.chance_r1)}"
            f'<h2>Training</h2><div class="plots">{plots}</div>{parts}'
            f"<h2>Example queries</h2><p class=\"note\">{esc(_score_note(report.level_weights))} Each result shows the image, "
            f"its foreground map and the map on each body stripe. A stripe's bar is how well it matches the "
            f"query's fine token for that stripe against the gallery: its cosine minus that stripe's mean over the gallery "
            f"for this query, in the stripes' typical standard deviation over it (one scale for all stripes, so a bar's "
            f"length follows the score; a full bar is 3), so a described part that matches reads "
            f"positive and one that does not reads negative; the coarse tokens' cosines follow (from -1 to +1).</p>{''.join(queries)}"
            f"{video}</body></html>")


def write_report(report: Report, path: str | Path) -> Path:
    """Render and write atomically."""
    return write_text_atomic(path, render_report(report))
