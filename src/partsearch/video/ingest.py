"""`partsearch ingest`: videos -> a gallery folder of person crops, one record per crop.

Layout of GALLERY_DIR (format `partsearch-ingest/1`, docs/VIDEO.md):

    records.jsonl              every record of every finished video (derived: rebuilt from the
                               per-video files at the end of each run)
    crops/<video name>/        one folder per finished video; the name is the video's path as
                               given (or relative to the folder given), its suffix dot made "_"
      t0001_f000120.jpg        a crop: track 1, frame 120 (JPEG)
      records.jsonl            this video's records, one JSON object per crop
      video.json               the completion marker: the video, its size and mtime, the
                               settings, and the counts
    .work/<video name>/        the video being ingested (hidden: `partsearch index` skips it)
    .lock                      flock held by the running ingest
    .partsearch-ingest         written when ingest makes or first claims the folder; `--out` must
                               be a new or empty folder, or a gallery (one with this file or a
                               finished video), so ingest never deletes what it did not write

A record: {"crop": path relative to GALLERY_DIR, "video": the video's path relative to
GALLERY_DIR, "camera": the camera's name, "frame": index in the video, "time": seconds into it,
"wall_time": ISO 8601 date-time with its UTC offset, or null when the video's start is unknown,
"box": [x1, y1, x2, y2] frame pixels (x2, y2 exclusive), "track": track id within the video
(1, 2, ...), "score": detector score}. Camera and start: `partsearch.video.cameras`.

Crash safety: a video's crops and records are written under .work/ and the folder is renamed into
crops/ in one step once its records and marker are complete, so crops/ never holds part of a video
and a kill at any point loses at most the video in progress. A rerun skips every video whose marker
matches the file (size, mtime) and the settings, and ingests the others again from their first
frame. `partsearch index GALLERY_DIR` embeds crops/ (records.jsonl and hidden folders are not images).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from partsearch.errors import DataError, StorageError
from partsearch.files import atomic_path, write_text_atomic
from partsearch.video import gate
from partsearch.video.cameras import VideoSource, resolve_sources, with_source_fields
from partsearch.video.decode import Frame, VideoError, expected_samples, find_videos, open_video, sample_frames
from partsearch.video.detect import HOG, Detector, PersonBox, build_detector
from partsearch.video.progress import Progress
from partsearch.video.settings import IngestSettings
from partsearch.video.track import PersonTracker

FORMAT = "partsearch-ingest/1"
RECORDS = "records.jsonl"
MARKER = "video.json"
GALLERY_MARKER = ".partsearch-ingest"  # written first: this folder is an ingest gallery
MAX_WORKERS = 8


def default_workers() -> int:
    """The cores this process may run on, at most `MAX_WORKERS`: how many frames the detector
    works on at once by default."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


@dataclass
class VideoReport:
    name: str
    path: str
    status: str  # "ingested", "skipped" (finished before), "failed"
    message: str = ""
    frames: int = 0
    crops: int = 0
    tracks: int = 0
    seconds: float = 0.0
    workers: int = 1  # frames the detector worked on at once
    video_seconds: float = 0.0  # the video's length


def _real_time(video_seconds: float, seconds: float) -> str:
    """`1.80x real time`: seconds of video per second of ingest."""
    return f"{video_seconds / seconds:.2f}x real time"


def _pace(frames: int, video_seconds: float, seconds: float) -> str:
    """`(9.0 frames/s, 1.80x real time)`: how fast, and against the video's own clock."""
    if seconds <= 0:
        return ""
    real = f", {_real_time(video_seconds, seconds)}" if video_seconds > 0 else ""
    return f" ({frames / seconds:.1f} frames/s{real})"


@dataclass
class IngestReport:
    out_dir: str
    videos: list[VideoReport] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for v in self.videos if v.status == status)

    def summary(self) -> str:
        done = [v for v in self.videos if v.status == "ingested"]
        frames = sum(v.frames for v in done)
        seconds = sum(v.seconds for v in done)
        pace = _pace(frames, sum(v.video_seconds for v in done), seconds)
        lines = [f"ingested {len(done)} video(s) into {self.out_dir}: {frames} frames sampled, "
                 f"{sum(v.crops for v in done)} crops, {sum(v.tracks for v in done)} tracks in {seconds:.1f} s{pace}"]
        if self.count("skipped"):
            lines.append(f"{self.count('skipped')} video(s) already ingested with these settings were skipped")
        for v in self.videos:
            if v.status == "failed":
                lines.append(f"FAILED: {v.message}")
        return "\n".join(lines)


def pace_hint(video_seconds: float, seconds: float, settings: IngestSettings) -> str | None:
    """What to try when a video took longer to ingest than it takes to play (None otherwise, or
    when the video's length is unknown): the motion gate for HOG on a fixed camera."""
    if video_seconds <= 0 or seconds <= video_seconds:
        return None
    pace = _real_time(video_seconds, seconds)
    if settings.detector == HOG and not settings.motion_gate:
        return (f"slower than the video plays ({pace}): for a fixed camera, --motion-gate runs HOG only where the "
                "frame moves (about 3x faster on vtest.avi; docs/VIDEO.md, Motion gate)")
    return f"slower than the video plays ({pace}): a live camera would fall behind on this machine"


def video_key(name: str) -> str:
    """The folder name of a video under crops/: its name with the suffix's dot made "_" (so
    `cam1/0001.mp4` -> `cam1/0001_mp4`; two videos that differ only by container stay apart)."""
    path = Path(name)
    stem = path.with_suffix("").as_posix() if path.suffix else path.as_posix()
    return f"{stem}_{path.suffix[1:]}" if path.suffix else stem


def _stat(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _settings_dict(settings: IngestSettings, detector: Detector) -> dict:
    d = dataclasses.asdict(settings)
    if d.pop("motion_gate"):  # absent when off: galleries written before the gate existed stay valid
        d["motion_gate"] = gate.config()
    d["detector"] = detector.name
    d["min_score"] = detector.default_min_score if settings.min_score is None else settings.min_score
    if getattr(detector, "config", None):
        d["detector_config"] = detector.config
    return d


def read_marker(folder: Path) -> dict | None:
    """A finished video's marker, or None when missing or unreadable."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == FORMAT else None


def _record_lines(path: Path) -> Iterator[tuple[int, dict | None]]:
    """(line number, the record, or None for a line that is not a JSON object) of a records file,
    blank lines left out."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            yield number, record if isinstance(record, dict) else None


def read_records(out_dir: str | Path) -> list[dict]:
    """Every record of every finished video of a gallery, in video-name then frame order.

    A gallery can come from someone else, so its lines are checked as they are read: a line that is
    not a JSON object is skipped with a warning naming the file and line, and a record whose video
    is not the one its folder's marker names is left out with one warning per folder (the video a
    record names is also checked against the allowed folders when it is indexed)."""
    out_dir = Path(out_dir)
    records = []
    for folder in finished_videos(out_dir):
        expected = read_marker(folder).get("video")
        path, others = folder / RECORDS, set()
        for number, record in _record_lines(path):
            if record is None:
                print(f"warning: {path} line {number}: not a JSON object, skipped; run `partsearch ingest` "
                      "on this video again to rewrite it", file=sys.stderr)
            elif record.get("video") != expected:
                others.add(str(record.get("video")))
            else:
                records.append(with_source_fields(record))
        if others:
            print(f"warning: {path}: left out the records naming {', '.join(sorted(others))}, not the video "
                  f"{expected!r} that {folder / MARKER} names", file=sys.stderr)
    return records


def _records_intact(folder: Path) -> bool:
    """Whether a finished video's records file is there and every line of it is a JSON object: a
    damaged one is ingested again rather than skipped."""
    try:
        return all(record is not None for _, record in _record_lines(folder / RECORDS))
    except OSError:
        return False


def finished_videos(out_dir: Path) -> list[Path]:
    """The folders under crops/ that hold a complete video, sorted."""
    crops = out_dir / "crops"
    if not crops.is_dir():
        return []
    return sorted(m.parent for m in crops.rglob(MARKER) if read_marker(m.parent) is not None
                  and (m.parent / RECORDS).is_file())


@contextlib.contextmanager
def _lock(out_dir: Path) -> Iterator[None]:
    with open(out_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{out_dir}: another `partsearch ingest` is writing this gallery; wait for it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_jpeg(path: Path, crop: np.ndarray, quality: int) -> None:
    import cv2

    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise StorageError(f"{path}: OpenCV could not encode the crop as JPEG")
    path.write_bytes(data.tobytes())


def ingest(
    videos: Sequence[str | Path],
    out_dir: str | Path,
    settings: IngestSettings = IngestSettings(),
    detector: Detector | None = None,
    progress: bool = True,
    device: str = "cpu",
    on_frame: Callable[[str, int], None] | None = None,
    camera: str | None = None,
    start: str | None = None,
    workers: int | None = None,
) -> IngestReport:
    """Ingest `videos` (files or folders of them) into the gallery `out_dir`.

    `detector` overrides `settings.detector` (tests inject one). `on_frame(name, n)` is called
    after the n-th sampled frame of a video is processed (the crash tests kill the process there).
    A video that cannot be decoded is reported and skipped; DataError when none of the videos
    could be ingested or found finished. `camera` and `start` (ISO 8601) name the camera of every
    video and the start of the one video given; otherwise each video's sidecar or file stem does
    (`partsearch.video.cameras`). `workers`: how many sampled frames the detector works on at once
    (None: `default_workers()`), each on one thread, when the detector allows it
    (`parallel_frames`, HOG) and the motion gate is off; the crops, tracks and records are the same
    for any number.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise DataError(f"--workers {workers}: must be 1 or more")
    if settings.fps is not None and not settings.fps > 0:
        raise DataError(f"--fps {settings.fps}: must be positive")
    if settings.min_height < 0:
        raise DataError(f"--min-height {settings.min_height}: must be 0 or more")
    if settings.motion_gate and settings.detector != HOG:
        raise DataError(f"--motion-gate with --detector {settings.detector}: the gate is measured with --detector hog "
                        "only (a torchvision detector rescales each small region it is given, and on a GPU it needs "
                        "no gate); drop --motion-gate or use --detector hog")
    found = find_videos(videos)
    if not found:
        raise DataError("no videos given")
    keys: dict[str, Path] = {}
    for path, name in found:
        key = video_key(name)
        if key in keys and keys[key].resolve() != path.resolve():
            raise DataError(f"{keys[key]} and {path} would both be stored as crops/{key}; ingest them into "
                            "different --out folders, or give their parent folder so their names differ")
        keys[key] = path
    sources = dict(zip(keys, resolve_sources(list(keys.values()), camera, start)))
    detector = detector if detector is not None else build_detector(settings.detector, device)
    wanted = _settings_dict(settings, detector)
    out_dir = Path(out_dir)
    created = _claim(out_dir)
    report = IngestReport(str(out_dir))
    try:
        with _lock(out_dir):
            _ingest_all(keys, sources, out_dir, settings, wanted, detector, progress, on_frame, report, workers)
    finally:
        if created and not report.count("ingested") and not report.count("skipped"):
            shutil.rmtree(out_dir, ignore_errors=True)  # made by this run, and nothing came of it
    if not report.count("ingested") and not report.count("skipped"):
        raise DataError("no video could be ingested:\n" + "\n".join(f"  {v.message}" for v in report.videos))
    return report


def _claim(out_dir: Path) -> bool:
    """Make `out_dir` an ingest gallery: create it (True) or accept an existing gallery or an empty
    folder (False). A folder of other files is refused, so ingest never deletes or overwrites what
    it did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir}: is a file, not a folder; give --out a new folder")
    existed = out_dir.is_dir()
    if existed and not (out_dir / GALLERY_MARKER).is_file() and not finished_videos(out_dir) \
            and any(out_dir.iterdir()):
        raise DataError(f"--out {out_dir}: this folder holds files that `partsearch ingest` did not write; "
                        "give --out a new folder (or a gallery made by `partsearch ingest`, to add videos to it)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not (out_dir / GALLERY_MARKER).is_file():
            write_text_atomic(out_dir / GALLERY_MARKER, json.dumps({"format": FORMAT}) + "\n")
    except OSError as err:
        raise StorageError(f"--out {out_dir}: cannot create this folder ({err.strerror})") from None
    return not existed


def _ingest_all(keys: dict[str, Path], sources: dict[str, VideoSource], out_dir: Path, settings: IngestSettings,
                wanted: dict, detector: Detector, progress: bool, on_frame: Callable[[str, int], None] | None,
                report: IngestReport, workers: int = 1) -> None:
    shutil.rmtree(out_dir / ".work", ignore_errors=True)
    for key, path in keys.items():
        final = out_dir / "crops" / key
        marker = read_marker(final)
        if (marker is not None and marker.get("settings") == wanted and marker.get("file") == _stat(path)
                and marker.get("source") == sources[key].as_dict() and _records_intact(final)):
            report.videos.append(VideoReport(key, str(path), "skipped"))
            continue
        try:
            report.videos.append(_ingest_video(path, key, sources[key], out_dir, settings, wanted, detector,
                                               progress, on_frame, workers))
        except VideoError as err:
            shutil.rmtree(out_dir / ".work", ignore_errors=True)
            print(f"warning: skipped {err}", file=sys.stderr)
            report.videos.append(VideoReport(key, str(path), "failed", str(err)))
        except OSError as err:
            shutil.rmtree(out_dir / ".work", ignore_errors=True)
            raise StorageError(f"{out_dir}: cannot write the crops of {path} ({err})") from None
    shutil.rmtree(out_dir / ".work", ignore_errors=True)
    _write_all_records(out_dir)


@contextlib.contextmanager
def _opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's own thread pool set to `count` threads for the block, then restored."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _detected(frames: Iterable[Frame], detector: Detector, workers: int) -> Iterator[tuple[Frame, list[PersonBox]]]:
    """(frame, the detector's boxes) in the frames' order. With `workers` > 1 the detector works on
    that many frames at once, each on one thread (OpenCV's pool set to one thread meanwhile, so
    the cores are not asked twice). HOG spends its time in OpenCV, which lets go of Python's lock,
    and on 2 cores a frame per thread measured faster than OpenCV splitting each frame across its
    threads (docs/BENCHMARKS.md, section 8)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # HOG's matrix products are small (`video.hog`)
        if workers <= 1:
            for frame in frames:
                yield frame, detector(frame.image)
        else:
            yield from _detected_at_once(frames, detector, workers)


def _detected_at_once(frames: Iterable[Frame], detector: Detector,
                      workers: int) -> Iterator[tuple[Frame, list[PersonBox]]]:
    """`_detected` with `workers` frames in flight, each on one thread, yielded in order."""
    pending: collections.deque = collections.deque()
    with _opencv_threads(1), ThreadPoolExecutor(workers, thread_name_prefix="detect") as pool:
        try:
            for frame in frames:
                pending.append((frame, pool.submit(detector, frame.image)))
                if len(pending) > 2 * workers:  # bounded: a few decoded frames in memory, not the video
                    done, boxes = pending.popleft()
                    yield done, boxes.result()
            while pending:
                done, boxes = pending.popleft()
                yield done, boxes.result()
        finally:
            for _, future in pending:
                future.cancel()


def _ingest_video(path: Path, key: str, source: VideoSource, out_dir: Path, settings: IngestSettings,
                  wanted: dict, detector: Detector, progress: bool,
                  on_frame: Callable[[str, int], None] | None, workers: int = 1) -> VideoReport:
    """Sample, detect, track and crop one video under .work/, then move it into crops/."""
    start = time.perf_counter()
    capture, info = open_video(path)
    capture.release()
    work = out_dir / ".work" / key
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sample_fps = min(settings.fps, info.fps) if settings.fps is not None else info.fps
    tracker = PersonTracker(sample_fps)
    if settings.motion_gate:
        detector = gate.MotionGate(detector)  # one background model per video: frames in order
    if not getattr(detector, "parallel_frames", False):
        workers = 1  # a detector that keeps state between frames, or runs its own threads (torch)
    min_score = wanted["min_score"]
    pending: list[tuple[int, float, PersonBox, int, str]] = []  # frame, time, box, provisional key, file
    sampled = detections = 0
    bar = Progress(key, expected_samples(info, settings.fps), enabled=progress)
    try:
        for frame, found in _detected(sample_frames(path, settings.fps), detector, workers):
            height, width = frame.image.shape[:2]
            boxes = [b for b in (box.clipped(width, height) for box in found)
                     if b is not None and b.score >= min_score and b.height >= settings.min_height]
            detections += len(boxes)
            keys = tracker.update(boxes, frame.image if settings.stitch or settings.reidentify else None, frame.time)
            for box, provisional in zip(boxes, keys):
                name = f"k{provisional:06d}_f{frame.index:06d}_{len(pending)}.jpg"
                _write_jpeg(work / name, frame.image[box.y1:box.y2, box.x1:box.x2], settings.jpeg_quality)
                pending.append((frame.index, frame.time, box, provisional, name))
            sampled += 1
            bar.update(1)
            if on_frame is not None:
                on_frame(key, sampled)
    finally:
        bar.close()

    ids = tracker.track_ids(stitch_fragments=settings.stitch, reidentify_people=settings.reidentify)
    rel_video = Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()
    records = []
    for frame_index, t, box, provisional, name in pending:
        track = ids.get(tracker.key_at(provisional, t))
        if track is None:
            (work / name).unlink()  # never a confirmed track: a detector flash
            continue
        crop = f"t{track:04d}_f{frame_index:06d}.jpg"
        (work / name).rename(work / crop)
        records.append({"crop": f"crops/{key}/{crop}", "video": rel_video, "camera": source.camera,
                        "frame": frame_index, "time": round(t, 3), "wall_time": source.wall_time(t),
                        "box": list(box.xyxy), "track": track, "score": round(box.score, 4)})
    seconds = time.perf_counter() - start
    marker = {
        "format": FORMAT, "video": rel_video, "video_absolute": str(path.resolve()), "file": _stat(path),
        "source": source.as_dict(), "settings": wanted, "fps": info.fps, "frames": info.frame_count, "width": info.width,
        "height": info.height, "sampled": sampled, "detections": detections, "crops": len(records),
        "tracks": len(set(ids.values())), "seconds": round(seconds, 2),
    }
    with atomic_path(work / RECORDS) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with atomic_path(work / MARKER) as tmp:
        tmp.write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    final = out_dir / "crops" / key
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # an earlier ingest of this video with other settings, or of an older file
        stale = out_dir / ".work" / f".stale-{os.getpid()}"
        final.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    work.rename(final)
    video_seconds = info.frame_count / info.fps if info.frame_count > 0 else 0.0  # unknown: no pace
    print(f"{key}: {sampled} frames sampled, {len(records)} crops, {len(set(ids.values()))} tracks in {seconds:.1f} s"
          f"{_pace(sampled, video_seconds, seconds)}", file=sys.stderr)
    hint = pace_hint(video_seconds, seconds, settings)
    if hint:
        print(f"note: {key}: {hint}", file=sys.stderr)
    return VideoReport(key, str(path), "ingested", "", sampled, len(records), len(set(ids.values())), seconds, workers,
                       video_seconds)


def _write_all_records(out_dir: Path) -> None:
    """records.jsonl at the gallery root: the concatenation of the finished videos' records."""
    records = read_records(out_dir)
    with atomic_path(out_dir / RECORDS) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
