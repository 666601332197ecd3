"""Exporting a case (`partsearch case export NAME --index INDEX_DIR --out DIR`): a folder that
holds the evidence on its own.

    DIR/case.json        the case: name, notes, sightings (camera, video, time, wall_time, frame, box,
                         track, score, query, decision, note), the files written for each, and
                         `missing`: what could not be written and why
    DIR/sightings.csv    one row per sighting, the same fields
    DIR/crops/NNNN.jpg   each sighting's crop (from the index, else the case's own copy)
    DIR/frames/NNNN.jpg  the frame it was seen in, with its box drawn (re-read from the video, else
                         the case's copy)
    DIR/clips/NNNN.mp4   the track's clip, CLIP_MARGIN s either side, with the box drawn on the
                         frames its crops came from (cut with OpenCV, MPEG-4 part 2); of a person
                         who left the view and came back (`tracks.visits`), the visit the
                         sighting's crop is from

The folder is written under a temporary name beside DIR and renamed when complete: a crash or
a refused write leaves no half-written export (and an existing DIR is never overwritten). A
source that is gone (a deleted video or crop) is named in `missing`, never skipped silently.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from partsearch.errors import DataError
from partsearch.search.cases import CaseStore, Sighting
from partsearch.search.searcher import Searcher
from partsearch.search.store import storage
from partsearch.search.tracks import VideoRecord, frame_with_box, track_visits

CLIP_MARGIN = 1.0  # seconds of video kept before the first and after the last crop [ours]
CSV_FIELDS = ("number", "camera", "video", "time", "wall_time", "frame", "box", "track", "start", "end", "score",
              "query", "decision", "note", "crop", "frame_image", "clip")


def cut_clip(video: Path, out: Path, start: float, end: float, boxes: dict[int, list[int]]) -> int:
    """Write frames [start - CLIP_MARGIN, end + CLIP_MARGIN] s of `video` to `out` (MP4), drawing
    `boxes[frame]` where given; returns the frames written. FileNotFoundError when the video
    cannot be read."""
    import cv2

    if not video.is_file():
        raise FileNotFoundError(video)
    capture = cv2.VideoCapture(str(video))
    writer, written = None, 0
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
        first = max(0, int((start - CLIP_MARGIN) * fps))
        last = int((end + CLIP_MARGIN) * fps)
        capture.set(cv2.CAP_PROP_POS_FRAMES, first)
        for number in range(first, last + 1):
            ok, frame = capture.read()
            if not ok:
                break
            if number in boxes:
                x1, y1, x2, y2 = boxes[number]
                cv2.rectangle(frame, (x1, y1), (x2 - 1, y2 - 1), (0, 200, 255), max(2, frame.shape[0] // 200))
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (frame.shape[1], frame.shape[0]))
            writer.write(frame)
            written += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if not written:
        raise FileNotFoundError(f"{video}: no frame between {start:.2f} s and {end:.2f} s could be read")
    return written


def _track_boxes(searcher: Searcher, sighting: Sighting) -> dict[int, list[int]]:
    gen = searcher.current()
    rows = gen.tracks.get((sighting.video, sighting.track), [])
    return {gen.entries[r].video.frame: list(gen.entries[r].video.box) for r in rows}


def _clip_span(searcher: Searcher, sighting: Sighting) -> tuple[float, float]:
    """Seconds of the video the clip shows: the visit of the track that holds the sighting's crop
    (the track's first to last crop when the index no longer holds it)."""
    gen = searcher.current()
    rows = gen.tracks.get((sighting.video, sighting.track), [])
    time = sighting.time if sighting.time is not None else sighting.start
    if len(rows) and time is not None:
        for start, end in track_visits(gen.entries, rows):
            if start <= time <= end:
                return start, end
    start = sighting.start if sighting.start is not None else sighting.time
    return start, sighting.end if sighting.end is not None else sighting.time


def export_case(searcher: Searcher, name: str, out_dir: str | Path) -> dict:
    """Write case `name` of the searcher's index to `out_dir` (module docstring); returns what
    case.json holds."""
    cases = CaseStore(searcher.store)
    case = cases.load(name)
    out = Path(out_dir).resolve()
    if out.exists():
        raise DataError(f"--out {out} exists; choose a new folder (an export never overwrites one)")
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    case_dir = cases.folder(name)
    images_root = searcher.store.images_root(searcher.current().meta)
    rows, missing = [], []
    try:
        with storage(f"export {out}"):
            for sub in ("crops", "frames", "clips"):
                (partial / sub).mkdir(parents=True)
            for number, s in enumerate(case.sightings, start=1):
                files = {"crop": None, "frame_image": None, "clip": None}
                crop_source = _crop_source(searcher, s, case_dir)
                if crop_source is not None:
                    files["crop"] = f"crops/{number:04d}{crop_source.suffix.lower()}"
                    shutil.copyfile(crop_source, partial / files["crop"])
                else:
                    missing.append(f"sighting {number}: crop {s.relpath or s.id} (gone from the index and the case)")
                if s.video is not None:
                    frame = _frame(images_root, s, case_dir)
                    if frame is not None:
                        files["frame_image"] = f"frames/{number:04d}.jpg"
                        (partial / files["frame_image"]).write_bytes(frame)
                    else:
                        missing.append(f"sighting {number}: frame {s.frame} of {s.video} (video gone, no copy)")
                    clip = f"clips/{number:04d}.mp4"
                    try:
                        cut_clip(images_root / s.video, partial / clip, *_clip_span(searcher, s),
                                 _track_boxes(searcher, s))
                        files["clip"] = clip
                    except FileNotFoundError:
                        missing.append(f"sighting {number}: clip of {s.video} (the video is gone or unreadable)")
                rows.append(dict(asdict(s), number=number, **files))
            body = {"format": "partsearch-case-export/1", "name": case.name, "notes": case.notes,
                    "created": case.created, "sightings": rows, "missing": missing}
            (partial / "case.json").write_text(json.dumps(body, indent=1))
            (partial / "sightings.csv").write_text(_csv(rows))
            partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return body


def _crop_source(searcher: Searcher, s: Sighting, case_dir: Path) -> Path | None:
    gen = searcher.current()
    if s.id in gen.rows:
        path = searcher.image_path(gen.entries[gen.rows[s.id]], gen)
        if path.is_file():
            return path
    copy = case_dir / s.crop if s.crop else None
    return copy if copy is not None and copy.is_file() else None


def _frame(images_root: Path, s: Sighting, case_dir: Path) -> bytes | None:
    record = VideoRecord(s.video, s.frame, s.time, tuple(s.box), s.track, s.camera or "", s.wall_time)
    try:
        return frame_with_box(images_root / s.video, record)
    except FileNotFoundError:
        copy = case_dir / s.frame_image if s.frame_image else None
        return copy.read_bytes() if copy is not None and copy.is_file() else None


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()
