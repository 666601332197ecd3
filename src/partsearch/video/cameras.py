"""Which camera filmed a video and when it started, so every crop says where and when it was seen.

A video's camera and start time come from, in order of precedence:

1. the command line: `ingest --camera NAME` (every video given is that camera) and
   `ingest --start 2026-01-31T08:00:00+01:00` (one video only: the wall-clock time of its first frame);
2. a sidecar file beside the video, named like it plus `.json` (`cam1.mp4` -> `cam1.mp4.json`, as
   photo exports name their sidecars): `{"camera": "gate", "start": "2026-01-31T08:00:00Z"}`, both
   keys optional;
3. otherwise the camera is the video's file stem (`cam1.mp4` -> `cam1`, so a folder of videos, one per
   camera, ingests as several cameras) and the start is unknown.

A start time without a UTC offset is taken as UTC [ours: a camera's local zone cannot be guessed].
A record's `wall_time` is the start plus the frame's time in the video, as ISO 8601 with its offset
and milliseconds, or null when the start is unknown.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from partsearch.errors import DataError

SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class VideoSource:
    """The camera that filmed a video and the wall-clock time of its first frame (None: unknown)."""

    camera: str
    start: dt.datetime | None = None

    def wall_time(self, seconds: float) -> str | None:
        """The ISO 8601 time `seconds` into the video (None when the start is unknown)."""
        if self.start is None:
            return None
        return (self.start + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")

    def as_dict(self) -> dict:
        return {"camera": self.camera, "start": None if self.start is None else self.start.isoformat()}


def parse_start(text: str, where: str) -> dt.datetime:
    """An ISO 8601 date-time (`Z` or an offset; none means UTC). DataError naming `where` otherwise."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError):
        raise DataError(f"{where}: {text!r} is not an ISO 8601 date-time; write e.g. 2026-01-31T08:00:00+01:00 "
                        "(no offset means UTC)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def sidecar_path(video: Path) -> Path:
    return video.with_name(video.name + SIDECAR_SUFFIX)


def read_sidecar(video: Path) -> dict:
    """The sidecar's {"camera", "start"} (either may be absent); {} when there is no sidecar."""
    path = sidecar_path(video)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable JSON sidecar ({err}); write "
                        '{"camera": "NAME", "start": "2026-01-31T08:00:00Z"} or remove it') from None
    if not isinstance(data, dict) or set(data) - {"camera", "start"}:
        raise DataError(f"{path}: a sidecar holds an object with the keys camera and start only, got "
                        f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    if "camera" in data and not (isinstance(data["camera"], str) and data["camera"].strip()):
        raise DataError(f"{path}: camera must be a non-empty string, got {data['camera']!r}")
    if "start" in data and data["start"] is not None and not isinstance(data["start"], str):
        raise DataError(f"{path}: start must be an ISO 8601 string, got {data['start']!r}")
    return data


def _text(name: str, where: str) -> str:
    """`name` if it is valid text; a DataError naming `where` if it holds bytes that are not UTF-8
    (Python reads them from a command line or a JSON escape as lone surrogates, which no output can
    write later)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataError(f"{where}: the camera name {name!r} is not valid text (character {err.start + 1} is not "
                        "UTF-8); give the name in UTF-8") from None
    return name


def resolve_sources(videos: list[Path], camera: str | None = None, start: str | None = None) -> list[VideoSource]:
    """One `VideoSource` per video, by the precedence in this module's docstring. A file stem that
    is not valid text names its camera with U+FFFD in place of the bytes that are not UTF-8."""
    if camera is not None and not camera.strip():
        raise DataError("--camera: give a non-empty name")
    if camera is not None:
        _text(camera, "--camera")
    if start is not None and len(videos) != 1:
        raise DataError(f"--start gives the start of one video, but {len(videos)} were given; write a sidecar "
                        "VIDEO.json beside each video instead (docs/VIDEO.md)")
    start_time = parse_start(start, "--start") if start is not None else None
    sources = []
    for video in videos:
        sidecar = read_sidecar(video)
        if sidecar.get("camera"):
            _text(sidecar["camera"], str(sidecar_path(video)))
        stem = os.fsencode(video.stem).decode("utf-8", "replace")
        name = camera or sidecar.get("camera") or stem
        when = start_time
        if when is None and sidecar.get("start"):
            when = parse_start(sidecar["start"], str(sidecar_path(video)))
        sources.append(VideoSource(name.strip(), when))
    return sources


def with_source_fields(record: dict) -> dict:
    """A record of an older gallery, written before records named their camera and time, given
    `camera` (the video's file stem) and `wall_time` (unknown); a current record unchanged."""
    if "camera" in record and "wall_time" in record:
        return record
    out = dict(record)
    out.setdefault("camera", PurePosixPath(str(record.get("video", ""))).stem)
    out.setdefault("wall_time", None)
    return out
