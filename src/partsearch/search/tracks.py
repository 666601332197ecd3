"""Tracks in a search index: the video record a crop of a `partsearch ingest` gallery carries in
the manifest, the crops of each track, and a track's score from its crops' scores.

A track is one person as far as the tracker can tell, keyed by `(video, track)` (docs/VIDEO.md).
A person who left the view and came back is one track with several visits (`visits`).
Its score aggregates the model's similarity s(v, t) of its crops [ours]:

- `max`: the best crop's score, so a track ranks where its best crop ranks;
- `mean-top3`: the mean of its three best crops' scores (of all of them when it has fewer), so
  one crop that happens to match (a neighbour cut into the box, a tracker switching people for
  a frame) counts less than a person seen matching several times.

`DEFAULT_AGGREGATE` is `mean-top3`, measured to rank better (`python -m benchmarks track-search`,
docs/BENCHMARKS.md section 9): track R@1 73.1 vs 71.8 with clean tracks, 73.5 vs 47.8 when 30% of
a track's crops show someone else.
"""

from __future__ import annotations

import datetime
import math
import os
import shlex
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from partsearch.errors import DataError, UnsafeFile
from partsearch.files import regular_file_within

TOP_K_MEAN = 3
AGGREGATES = ("max", f"mean-top{TOP_K_MEAN}")
DEFAULT_AGGREGATE = f"mean-top{TOP_K_MEAN}"
# A track's crops farther apart than this are two visits: longer than ingest's stitching bridges a
# person lost behind something (`partsearch.video.stitch.MAX_GAP_S`), so only re-identification
# joins such tracks.
VISIT_GAP_S = 4.0
_RECORD_FIELDS = {"video": str, "frame": int, "time": (int, float), "box": list, "track": int}
_CHECK_FIELDS = {"root": str, "size": int, "mtime_ns": int}


@dataclass(frozen=True)
class VideoRecord:
    """Where a crop was seen: `video` (the file, relative to the index's images root), `frame`
    (index from 0), `time` (seconds), `box` (x1, y1, x2, y2 frame pixels, x2/y2 exclusive),
    `track` (id within the video), `camera` (the ingest's `--camera` name; the video's file stem
    when none was given or the record predates it) and `wall_time` (ISO 8601 with its UTC offset
    when the camera's start is known, else None).

    What the indexer checked, so the service serves that file and no other [ours]: `root`, the
    folder (relative to the images root) the video was found inside, the gallery or a
    `--video-root`; `size` and `mtime_ns` of the video when it was indexed (None when it was not on
    disk then). A manifest written before these checks has `root` None: only a video inside the
    images root is served from it."""

    video: str
    frame: int
    time: float
    box: tuple[int, int, int, int]
    track: int
    camera: str = ""
    wall_time: str | None = None
    root: str | None = None
    size: int | None = None
    mtime_ns: int | None = None

    def __post_init__(self):
        if not self.camera:
            object.__setattr__(self, "camera", Path(self.video).stem)

    @property
    def key(self) -> tuple[str, int]:
        return self.video, self.track

    def to_dict(self) -> dict:
        values = {"video": self.video, "camera": self.camera, "frame": self.frame, "time": self.time,
                  "wall_time": self.wall_time, "box": list(self.box), "track": self.track}
        for key in _CHECK_FIELDS:
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        return values

    def where(self) -> dict:
        """Where and when the crop was seen, as results give it: `to_dict` without what the
        indexer checked (root, size, mtime)."""
        values = self.to_dict()
        for key in _CHECK_FIELDS:
            values.pop(key, None)
        return values

    @classmethod
    def from_dict(cls, values, where: str) -> VideoRecord:
        """A record checked field by field (a manifest line or an ingest record); ValueError naming
        `where` otherwise. `camera` and `wall_time` may be absent (older records)."""
        if not isinstance(values, dict):
            raise ValueError(f"{where}: the video record is {values!r}, not an object")
        for key, kind in _RECORD_FIELDS.items():
            value = values.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{where}: video field {key!r} is {value!r}")
        box = values["box"]
        if len(box) != 4 or not all(isinstance(x, int) and not isinstance(x, bool) for x in box):
            raise ValueError(f"{where}: video field 'box' is {box!r}, not four integers")
        if not math.isfinite(values["time"]):
            raise ValueError(f"{where}: video field 'time' is {values['time']!r}")
        camera, wall_time = values.get("camera") or "", values.get("wall_time")
        if not isinstance(camera, str):
            raise ValueError(f"{where}: video field 'camera' is {camera!r}, not a string")
        if wall_time is not None and wall_seconds(wall_time) is None:
            raise ValueError(f"{where}: video field 'wall_time' is {wall_time!r}, not an ISO 8601 time with "
                             "its UTC offset (e.g. 2026-01-31T08:00:00+00:00) or null")
        checks = {}
        for key, kind in _CHECK_FIELDS.items():
            value = values.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise ValueError(f"{where}: video field {key!r} is {value!r}")
            checks[key] = value
        return cls(values["video"], values["frame"], float(values["time"]), tuple(box), values["track"],
                   camera, wall_time, **checks)


def wall_seconds(value) -> float | None:
    """POSIX seconds of an ISO 8601 time that carries its UTC offset, else None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def join_records(records: Iterable[dict], gallery_dir: Path, images_root: Path,
                 video_roots: Sequence[Path] = ()) -> dict[str, VideoRecord]:
    """Ingest records (`partsearch.video.ingest.read_records(gallery_dir)`: `crop` and `video`
    relative to `gallery_dir`) keyed by their crop's path relative to `images_root`, the manifest's
    `path`; the video path is made relative to `images_root` too. Crops outside `images_root` are
    left out.

    A record's video must lie inside the gallery or one of `video_roots` once its links are
    followed, and be a regular file when it exists: a gallery someone hands over cannot make the
    index (and so the service) read a file elsewhere, such as `/etc/passwd`. Records that break the
    rule are left out with one warning per video naming the fix (`--video-root DIR`)."""
    gallery_dir, images_root = gallery_dir.resolve(), images_root.resolve()
    roots = [gallery_dir, *(Path(r).resolve() for r in video_roots)]
    joined, refused = {}, {}
    for number, record in enumerate(records, start=1):
        crop = (gallery_dir / str(record.get("crop", ""))).resolve()
        if images_root not in crop.parents:
            continue
        given = gallery_dir / str(record.get("video", ""))
        checked = _check_video(given, roots, images_root)
        if isinstance(checked, str):
            refused.setdefault(str(record.get("video", "")), checked)
            continue
        video = Path(os.path.relpath(given, images_root)).as_posix()
        try:
            joined[crop.relative_to(images_root).as_posix()] = VideoRecord.from_dict(
                dict(record, video=video, **checked), f"{gallery_dir} record {number}")
        except ValueError as err:
            raise DataError(f"{err}; run `partsearch ingest` on its videos again") from None
    for video, reason in refused.items():
        print(f"warning: {gallery_dir}: left out the crops of video {video!r}: {reason}", file=sys.stderr)
    return joined


def _check_video(given: Path, roots: list[Path], images_root: Path) -> dict | str:
    """The checked fields of a video record (`root`, `size`, `mtime_ns`) or, when it must be
    refused, why."""
    resolved = given.resolve()
    root = next((r for r in roots if r == resolved or r in resolved.parents), None)
    if root is None:
        return ("it is outside the gallery and every --video-root folder; if it is yours, index again with "
                f"--video-root {shlex.quote(str(resolved.parent))}")
    relative_root = Path(os.path.relpath(root, images_root)).as_posix()
    if not resolved.exists():
        return {"root": relative_root}
    info = resolved.stat()
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    return {"root": relative_root, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def video_file(images_root: Path, record: VideoRecord) -> Path:
    """The video of `record` as the service may read it: a regular file inside the root it was
    indexed under, with the size and mtime it had then. FileNotFoundError when it is gone;
    `UnsafeFile` when a link now leads outside that root or the file was replaced."""
    root = images_root / record.root if record.root is not None else images_root
    resolved = regular_file_within(images_root / record.video, [root])
    if record.size is not None:
        info = resolved.stat()
        if (info.st_size, info.st_mtime_ns) != (record.size, record.mtime_ns):
            raise UnsafeFile(f"{record.video} changed since it was indexed (size or modification time)")
    return resolved


def group_tracks(records: Sequence[VideoRecord | None]) -> dict[tuple[str, int], np.ndarray]:
    """The rows of each track, `{(video, track): rows}` in (time, frame) order; rows without a
    record (plain images, uploads) belong to no track."""
    groups: dict[tuple[str, int], list[int]] = {}
    for row, record in enumerate(records):
        if record is not None:
            groups.setdefault(record.key, []).append(row)
    return {key: np.array(sorted(rows, key=lambda r: (records[r].time, records[r].frame)), np.int64)
            for key, rows in groups.items()}


def visits(times: Sequence[float]) -> list[tuple[float, float]]:
    """A track's visits, `[(start, end)]` in seconds: its crops' times (in order) split where
    the person was unseen for more than `VISIT_GAP_S`."""
    spans: list[tuple[float, float]] = []
    for t in times:
        if spans and t - spans[-1][1] <= VISIT_GAP_S:
            spans[-1] = (spans[-1][0], t)
        else:
            spans.append((t, t))
    return spans


def track_visits(entries: Sequence, rows: Iterable[int]) -> list[tuple[float, float]]:
    """`visits` of a track's rows of an index (`Generation.entries`, each with its `video` record)."""
    return visits([entries[int(r)].video.time for r in rows])


def aggregate(scores: np.ndarray, method: str) -> float:
    """A track's score from its crops' scores `(n,)`, n >= 1 (`AGGREGATES`)."""
    if method == "max":
        return float(np.max(scores))
    if method == f"mean-top{TOP_K_MEAN}":
        top = np.sort(np.asarray(scores, np.float64))[::-1][:TOP_K_MEAN]
        return float(top.mean())
    raise ValueError(f"unknown track aggregate {method!r}; use one of {', '.join(AGGREGATES)}")


def frame_with_box(video_path: Path, record: VideoRecord, quality: int = 85, width: int | None = None) -> bytes:
    """The JPEG of the frame a crop was cut from, with its box drawn, re-read from the video (a
    seek to `record.frame`); scaled down to `width` pixels first when it is wider (the box is
    drawn after scaling, so it stays as thick). FileNotFoundError when the video is gone or that
    frame cannot be read."""
    import cv2

    if not video_path.is_file():
        raise FileNotFoundError(video_path)
    capture = cv2.VideoCapture(str(video_path))
    try:
        capture.set(cv2.CAP_PROP_POS_FRAMES, record.frame)
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok or frame is None:
        raise FileNotFoundError(f"{video_path} frame {record.frame}")
    scale = 1.0
    if width is not None and frame.shape[1] > width:
        scale = width / frame.shape[1]
        frame = cv2.resize(frame, (width, round(frame.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    x1, y1, x2, y2 = (round(v * scale) for v in record.box)
    thickness = max(2, frame.shape[0] // 200)
    cv2.rectangle(frame, (x1, y1), (x2 - 1, y2 - 1), (0, 200, 255), thickness)
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FileNotFoundError(f"{video_path} frame {record.frame} (could not encode it)")
    return data.tobytes()
