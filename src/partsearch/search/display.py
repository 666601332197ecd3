"""How search results read as text: the tables `partsearch search` prints (`format_table`,
`format_track_table`, `where_when`) and the coarse rows that the tables and the explanations share
(`coarse_display`).
"""

from __future__ import annotations

from partsearch.search.filters import Filters
from partsearch.search.results import SearchResponse, TrackResponse
from partsearch.search.threshold import describe as describe_threshold


# Coarse token scores closer than this are shown as one number: tokens that read alike say
# nothing apart [ours].
ALIKE = 0.02


def coarse_display(scores: list[float], tolerance: float = ALIKE) -> list[tuple[str, float]]:
    """(label, cosine) rows for the coarse tokens, as far as they differ: one row with their mean
    when all lie within `tolerance`, else one row per token."""
    if not scores:
        return []
    if max(scores) - min(scores) <= tolerance:
        return [(f"coarse ({len(scores)} tokens alike)", sum(scores) / len(scores))]
    return [(f"token {j + 1}", v) for j, v in enumerate(scores)]


def format_table(response: SearchResponse) -> str:
    lines = []
    if response.truncated:
        lines.append("note: the query was longer than the tokenizer limit and was truncated")
    threshold = response.match_threshold
    if threshold is not None and response.results and response.results[0].score < threshold:
        lines.append(f"note: no result is a good match (the best score is below {threshold:.4f}, "
                     f"{describe_threshold(response.match_rule)})")
    if response.image is not None:
        like = response.image.get("name") or response.image.get("upload")
        lines.append(f"query image: {like}" + (f" with the text (text weight {response.text_weight:g})"
                                               if response.text_weight is not None else ""))
    for part in response.parsed:
        lines.append(f"understood: {part['words']!r} as {part['means']}")
    if response.filters:
        lines.append("filters: " + Filters(**response.filters).describe())
    lines.append(f"{'rank':>4}  {'score':>7}  {'global':>7}  {'coarse':>7}  {'fine':>7}  path")
    for r in response.results:
        lines.append(f"{r.rank:>4}  {r.score:7.4f}  {r.levels['global']:7.4f}  {r.levels['coarse']:7.4f}  "
                     f"{r.levels['fine']:7.4f}  {r.path}")
        if r.video is not None:
            lines.append("      " + where_when(r.video))
        lines.append("      parts: " + "  ".join(f"{name} {x:+.3f}" for name, x in zip(r.regions, r.parts["fine"])))
        lines.append("      coarse: " + "  ".join(f"{k} {v:+.3f}" for k, v in coarse_display(r.parts["coarse"])))
    return "\n".join(lines)


def where_when(video: dict) -> str:
    """'camera cam2, videos/cam2.mp4 at 12.40 s (2026-01-31T08:00:12+00:00), frame 62, track 3, box [..]'."""
    wall = f" ({video['wall_time']})" if video.get("wall_time") else ""
    return (f"camera {video['camera']}, {video.get('path') or video['video']} at {video['time']:.2f} s{wall}, frame {video['frame']}, "
            f"track {video['track']}, box {list(video['box'])}")


def format_track_table(response: TrackResponse) -> str:
    lines = []
    if response.truncated:
        lines.append("note: the query was longer than the tokenizer limit and was truncated")
    threshold = response.match_threshold
    if threshold is not None and response.results and response.results[0].best.score < threshold:
        lines.append(f"note: no track is a good match (its best crop scores below {threshold:.4f}, "
                     f"{describe_threshold(response.match_rule)})")
    for part in response.parsed:
        lines.append(f"understood: {part['words']!r} as {part['means']}")
    if response.filters:
        lines.append("filters: " + Filters(**response.filters).describe())
    lines.append(f"{'rank':>4}  {'score':>7}  {'track':>5}  {'crops':>5}  {'seen (s)':>15}  video  "
                 f"(track score: {response.aggregate} of its crops' scores)")
    for r in response.results:
        b = r.best
        lines.append(f"{r.rank:>4}  {r.score:7.4f}  {r.track:>5}  {r.crops:>5}  {r.start:7.2f}-{r.end:<7.2f}  {r.video_path or r.video}")
        wall = f", {b.wall_time}" if b.wall_time else ""
        if len(r.visits) > 1:
            lines.append(f"      {len(r.visits)} visits (s): " + ", ".join(f"{a:.2f}-{b:.2f}" for a, b in r.visits))
        if r.start_wall_time and r.end_wall_time:
            lines.append(f"      seen {r.start_wall_time} to {r.end_wall_time}")
        lines.append(f"      camera {r.camera}; best crop {b.score:.4f} at {b.time:.2f} s{wall} (frame {b.frame}, "
                     f"box {b.box}): {b.path}")
    return "\n".join(lines)
