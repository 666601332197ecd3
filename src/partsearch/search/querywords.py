"""Query words as filters: "a man in a red coat on camera 2 after 14:00" is the text "a man in a
red coat", the camera filter 2 and the time filter after 14:00. A small, predictable grammar
[ours], no language model; every phrase taken out is reported (`Parsed.parts`) so the user sees
what was understood. Phrases, case-insensitive, anywhere in the query:

- `[on|at|from|in] camera|cam X[, Y | or Y | and Y]` (further cameras as numbers): cameras;
- `in video NAME.EXT`: a video; `track N`: a track;
- `after|since T`, `before|until T`, `between T and T`: a time range, where T is `H:MM[:SS]`
  (24 h), `H[:MM] am|pm`, or a date and time `YYYY-MM-DD[T ]HH:MM[:SS][+HH:MM]`.

A bare number is never a time ("after 3 people" stays text). What is left, with its spaces
tidied, is the text searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from partsearch.search.filters import Filters

_T = (r"(?:\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}(?::\d{2})?(?:[+-]\d{2}:\d{2}|Z)?"
      r"|\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?|\d{1,2}\s*[ap]\.?m\.?)")
# A camera named by a word must not be one of these ("near the camera in a red coat" names none).
_NOT_NAMES = ("a|an|the|in|on|at|of|to|and|or|with|without|wearing|near|by|from|after|before|since|until|"
              "between|who|that|while|is|was|carrying|holding")
_CAMERA = re.compile(rf"\b(?:(?:on|at|from|in)\s+)?(?:the\s+)?(?:camera|cam)s?\s+([\w.-]*\d[\w.-]*|"
                     rf"(?!(?:{_NOT_NAMES})\b)[a-z][\w.-]*)"
                     r"((?:\s*(?:,|\bor\b|\band\b)\s*\d+\b)*)", re.I)
_VIDEO = re.compile(r"\b(?:in\s+)?video\s+([\w./-]+\.[a-z0-9]{2,4})\b", re.I)
_TRACK = re.compile(r"\btrack\s+(\d+)\b", re.I)
_BETWEEN = re.compile(rf"\bbetween\s+({_T})\s+and\s+({_T})", re.I)
_AFTER = re.compile(rf"\b(?:after|since)\s+({_T})", re.I)
_BEFORE = re.compile(rf"\b(?:before|until|till)\s+({_T})", re.I)


@dataclass
class Parsed:
    text: str  # what is left to search
    filters: Filters
    parts: list[dict] = field(default_factory=list)  # [{"words": as typed, "means": in words}]

    def to_dict(self) -> dict:
        return {"text": self.text, "filters": self.filters.to_dict(), "parts": self.parts}


def clock(words: str) -> str:
    """A time as typed -> the form `filters.parse_bound` reads: '2 pm' -> '14:00', '9:30am' ->
    '09:30', '2026-01-31 08:00' -> '2026-01-31T08:00'; 24-hour times as they are."""
    words = words.strip()
    if re.match(r"\d{4}-", words):
        return words.replace(" ", "T", 1).replace("Z", "+00:00")
    match = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?\s*([ap])?\.?m?\.?", words, re.I)
    hours, minutes, seconds, half = int(match[1]), match[2] or "00", match[3], (match[4] or "").lower()
    if half:
        hours = hours % 12 + (12 if half == "p" else 0)
    return f"{hours:02d}:{minutes}" + (f":{seconds}" if seconds else "")


def parse_words(query: str) -> Parsed:
    """Take the filter phrases out of `query` (module docstring)."""
    text, parts, found = query, [], {}

    def take(pattern: re.Pattern, handle) -> None:
        nonlocal text
        while (match := pattern.search(text)) is not None:
            means = handle(match)
            parts.append({"words": match.group(0).strip(), "means": means})
            text = text[:match.start()] + " " + text[match.end():]

    def camera(m):
        names = [m[1], *re.findall(r"\d+", m[2] or "")]
        found.setdefault("cameras", []).extend(names)
        return "camera " + " or ".join(names)

    def video(m):
        found.setdefault("videos", []).append(m[1])
        return f"video {m[1]}"

    def track(m):
        found.setdefault("tracks", []).append(int(m[1]))
        return f"track {m[1]}"

    def between(m):
        found["after"], found["before"] = clock(m[1]), clock(m[2])
        return f"after {found['after']}, before {found['before']}"

    def after(m):
        found["after"] = clock(m[1])
        return f"after {found['after']}"

    def before(m):
        found["before"] = clock(m[1])
        return f"before {found['before']}"

    for pattern, handle in ((_BETWEEN, between), (_AFTER, after), (_BEFORE, before), (_VIDEO, video),
                            (_CAMERA, camera), (_TRACK, track)):
        take(pattern, handle)
    text = re.sub(r"\s+([,.;])", r"\1", re.sub(r"\s+", " ", text)).strip(" ,;")
    return Parsed(text, Filters(**{k: tuple(v) if isinstance(v, list) else v for k, v in found.items()}), parts)


def merge(given: Filters, parsed: Filters) -> Filters:
    """`given` filters (options, form fields), each completed by the parsed one where not set."""
    values = {}
    for name in ("cameras", "videos", "tracks", "after", "before", "min_score"):
        mine = getattr(given, name)
        values[name] = mine if mine not in ((), None) else getattr(parsed, name)
    return replace(given, **values)
