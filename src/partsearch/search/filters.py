"""Filters inside a search: camera(s), video(s), track(s), a time range and a minimum score.

A filter is applied in the index, not by cutting a top k afterwards: `Filters.mask` marks the
generation's rows that pass, and the vector search looks only at those (`vectors.FaissIndex.
_search_rows`: exact up to FILTER_EXACT_MAX of them, else a FAISS ID selector plus the exact re-rank), so
a filtered search returns k results whenever k images pass. `min_score` alone is a cut of the
ranked list (a score is known only once scored).

Rules [ours, stated in docs/SEARCH.md]:
- `cameras`: a value matches a camera name equal to it (case-insensitive), and a number matches a
  name that ends in that number ("2" matches "cam2", "camera-2" and "2").
- `videos`: a value matches the video's path relative to the images root, or its file name.
- `tracks`: track ids (unique within one video; combine with `videos` for one person).
- `after` / `before` (inclusive): a time of day `H:MM[:SS]` (or a number of seconds) is compared
  with a crop's wall-clock time of day where ingest knows the camera's start, else with its time
  in the video (a video without a known start is taken to start at 0:00:00); a date and time
  `YYYY-MM-DDTHH:MM[:SS][+HH:MM]` is compared with the wall-clock time (with an offset as an
  absolute time, without one as each camera's local time), and crops without one do not pass.
Any filter but `min_score` passes only crops of ingested video.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from partsearch.errors import QueryError
from partsearch.search.tracks import wall_seconds

if TYPE_CHECKING:
    from partsearch.search.segments import Generation

_CLOCK = re.compile(r"([0-9]{1,2}):([0-5][0-9])(?::([0-5][0-9](?:\.[0-9]+)?))?")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_TRAILING_NUMBER = re.compile(r"([0-9]+)$")
DAY = 86400.0


@dataclass(frozen=True)
class TimeBound:
    """One end of a time range: `kind` "clock" (seconds of the day, or of the video when its start
    is unknown), "wall" (POSIX seconds) or "local" (a wall-clock time without offset, as POSIX
    seconds of that time read as UTC)."""

    kind: str
    value: float
    text: str


def parse_bound(text: str, name: str) -> TimeBound:
    text = str(text).strip()
    if match := _CLOCK.fullmatch(text):
        hours, minutes, seconds = int(match[1]), int(match[2]), float(match[3] or 0)
        if hours < 24:
            return TimeBound("clock", hours * 3600 + minutes * 60 + seconds, text)
    if _NUMBER.fullmatch(text):
        return TimeBound("clock", float(text), text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is not None:
        if moment.tzinfo is not None:
            return TimeBound("wall", moment.timestamp(), text)
        return TimeBound("local", moment.replace(tzinfo=datetime.timezone.utc).timestamp(), text)
    raise QueryError(f"{name} {text!r} is not a time; use a time of day H:MM[:SS] (e.g. 14:00), seconds "
                     "(e.g. 90), or a date and time YYYY-MM-DDTHH:MM[:SS][+HH:MM]")


def camera_matches(value: str, camera: str) -> bool:
    value, camera = value.strip().lower(), camera.lower()
    if value == camera:
        return True
    trailing = _TRAILING_NUMBER.search(camera)
    return value.isdigit() and trailing is not None and int(trailing[1]) == int(value)


class Columns:
    """The filterable fields of a generation's rows, as arrays (built once per generation)."""

    def __init__(self, gen: Generation):
        records = [e.video for e in gen.entries]
        n = len(records)
        self.has_video = np.array([r is not None for r in records], bool)
        # Names as codes into the sorted distinct names, so a filter compares integers.
        self.cameras, self.camera = np.unique(np.array([r.camera if r else "" for r in records], object),
                                              return_inverse=True)
        self.videos, self.video = np.unique(np.array([r.video if r else "" for r in records], object),
                                            return_inverse=True)
        self.track = np.array([r.track if r else -1 for r in records], np.int64)
        self.time = np.array([r.time if r else np.nan for r in records], np.float64)
        self.wall = np.full(n, np.nan)
        self.local = np.full(n, np.nan)
        for i, r in enumerate(records):
            if r is not None and r.wall_time is not None:
                moment = datetime.datetime.fromisoformat(r.wall_time)
                self.wall[i] = wall_seconds(r.wall_time)
                self.local[i] = moment.replace(tzinfo=datetime.timezone.utc).timestamp()
        # The clock a time of day is compared with: the local time of day when known, else video time.
        self.clock = np.where(np.isnan(self.local), self.time, np.mod(self.local, DAY))

    def values(self, bound: TimeBound) -> np.ndarray:
        return {"clock": self.clock, "wall": self.wall, "local": self.local}[bound.kind]


def columns(gen: Generation) -> Columns:
    cached = getattr(gen, "_filter_columns", None)
    if cached is None:
        cached = Columns(gen)
        gen._filter_columns = cached
    return cached


@dataclass(frozen=True)
class Filters:
    cameras: tuple[str, ...] = ()
    videos: tuple[str, ...] = ()
    tracks: tuple[int, ...] = ()
    after: str | None = None
    before: str | None = None
    min_score: float | None = None

    def __post_init__(self):
        for name in ("cameras", "videos", "tracks"):
            value = getattr(self, name)
            if isinstance(value, (str, int)):
                value = (value,)
            object.__setattr__(self, name, tuple(value or ()))
        for value in self.cameras + self.videos:
            if not isinstance(value, str) or not value.strip():
                raise QueryError(f"filter value {value!r} is not a camera or video name")
        for value in self.tracks:
            if isinstance(value, bool) or not isinstance(value, int):
                raise QueryError(f"track filter {value!r} is not an integer track id")
        for name in ("after", "before"):
            if getattr(self, name) is not None:
                parse_bound(getattr(self, name), name)
        if self.min_score is not None and (isinstance(self.min_score, bool) or not isinstance(self.min_score, (int, float))
                                           or not np.isfinite(self.min_score)):
            raise QueryError(f"min_score {self.min_score!r} is not a number")

    @classmethod
    def from_dict(cls, values) -> Filters:
        """From JSON (HTTP): unknown keys are named."""
        if values is None:
            return cls()
        if not isinstance(values, dict):
            raise QueryError(f"filters {values!r} is not an object")
        unknown = set(values) - {"cameras", "videos", "tracks", "after", "before", "min_score"}
        if unknown:
            raise QueryError(f"unknown filter(s) {sorted(unknown)}; use cameras, videos, tracks, after, before, min_score")
        return cls(**values)

    @property
    def selects(self) -> bool:
        """Whether the filter narrows the rows searched (all but `min_score` do)."""
        return bool(self.cameras or self.videos or self.tracks or self.after or self.before)

    def __bool__(self) -> bool:
        return self.selects or self.min_score is not None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        """The filter in words, for the user ("" when there is none)."""
        parts = []
        if self.cameras:
            parts.append("camera " + " or ".join(self.cameras))
        if self.videos:
            parts.append("video " + " or ".join(self.videos))
        if self.tracks:
            parts.append("track " + " or ".join(str(t) for t in self.tracks))
        if self.after:
            parts.append(f"after {self.after}")
        if self.before:
            parts.append(f"before {self.before}")
        if self.min_score is not None:
            parts.append(f"score at least {self.min_score:g}")
        return ", ".join(parts)

    def mask(self, gen: Generation) -> np.ndarray:
        """`(G,)` bool: the rows of `gen` that pass (every row when nothing narrows)."""
        cols = columns(gen)
        keep = cols.has_video.copy() if self.selects else np.ones(len(gen.entries), bool)
        if self.cameras:
            codes = [i for i, c in enumerate(cols.cameras) if c and any(camera_matches(v, c) for v in self.cameras)]
            keep &= np.isin(cols.camera, codes)
        if self.videos:
            wanted = set(self.videos)
            codes = [i for i, v in enumerate(cols.videos) if v and (v in wanted or v.rsplit("/", 1)[-1] in wanted)]
            keep &= np.isin(cols.video, codes)
        if self.tracks:
            keep &= np.isin(cols.track, np.array(self.tracks, np.int64))
        with np.errstate(invalid="ignore"):
            if self.after:
                bound = parse_bound(self.after, "after")
                keep &= cols.values(bound) >= bound.value
            if self.before:
                bound = parse_bound(self.before, "before")
                keep &= cols.values(bound) <= bound.value
        return keep
