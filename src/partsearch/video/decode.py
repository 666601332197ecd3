"""Reading videos with OpenCV (its wheels bundle FFmpeg, so every common container and codec
decodes) and sampling their frames at a chosen rate.

A video that cannot be opened, has no usable frame rate or size, decodes no frame, or stops
decoding well before the frame count its container announces (a truncated or damaged file)
raises `VideoError`, whose message names the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from partsearch.errors import DataError, VideoError

# FFmpeg reports every damaged packet on stderr; our own message says what happened, once.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
import cv2  # noqa: E402

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                  ".wmv", ".flv", ".3gp", ".ogv")
# A container's frame count may be an estimate (from duration x rate); a video counts as cut short
# only when it decodes fewer than this share of it, less two frames [ours].
COMPLETE_SHARE = 0.98


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frames per second, frame count (0 when unknown), width, height."""

    path: Path
    fps: float
    frame_count: int
    width: int
    height: int


@dataclass(frozen=True)
class Frame:
    """A decoded frame: its index in the video, its time in seconds, and its pixels
    `(H, W, 3)` uint8 in OpenCV's BGR order."""

    index: int
    time: float
    image: np.ndarray


def find_videos(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """The videos to ingest, as (path, name) pairs in argument order. A file argument is taken as
    it is (whatever its suffix) and named by its file name; a folder argument contributes every
    file with a video suffix under it, recursively (hidden files and folders left out, sorted),
    named by its path relative to that folder. DataError for a path that does not exist or a
    folder without videos."""
    found: list[tuple[Path, str]] = []
    for arg in paths:
        path = Path(arg)
        if path.is_file():
            found.append((path, path.name))
        elif path.is_dir():
            inside = sorted(
                p for p in path.rglob("*")
                if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not inside:
                raise DataError(f"{path}: no video files in this folder (looked for {', '.join(VIDEO_SUFFIXES)})")
            found += [(p, p.relative_to(path).as_posix()) for p in inside]
        else:
            raise DataError(f"{path}: no such file or folder")
    return found


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """An opened capture and its `VideoInfo`; VideoError naming the file when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{path}: cannot read this file (permission denied)")
    try:
        capture = cv2.VideoCapture(str(path))
        opened = capture.isOpened()
    except cv2.error as err:
        raise VideoError(f"{path}: OpenCV cannot open this video ({str(err).strip()})") from None
    if not opened:
        capture.release()
        raise VideoError(f"{path}: not a video OpenCV can decode (unknown format, or damaged / truncated file)")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        capture.release()
        raise VideoError(f"{path}: the container gives no usable frame rate ({fps}); re-mux it, "
                         "e.g. `ffmpeg -i IN -c copy OUT.mp4`")
    if width <= 0 or height <= 0:
        capture.release()
        raise VideoError(f"{path}: the video stream has no picture size ({width}x{height})")
    frames = int(count) if math.isfinite(count) and count > 0 else 0
    return capture, VideoInfo(path, fps, frames, width, height)


def expected_samples(info: VideoInfo, fps: float | None) -> int | None:
    """How many frames `sample_frames` will yield for a complete video (None when the container
    does not say how long it is)."""
    if info.frame_count <= 0:
        return None
    step = sampling_step(info, fps)
    return int(math.floor((info.frame_count - 1) / step + 1e-9)) + 1


def sampling_step(info: VideoInfo, fps: float | None) -> float:
    """Frames of the video per sampled frame (1.0 keeps every frame)."""
    if fps is None or fps >= info.fps:
        return 1.0
    return info.fps / fps


def sample_frames(path: str | Path, fps: float | None) -> Iterator[Frame]:
    """Decode `path` and yield one frame per 1/`fps` seconds (every frame when `fps` is None or
    above the video's rate): frame i is kept when it is the first at or after the next sample time
    k / fps. Frames in between are grabbed, not converted. Raises VideoError (after yielding what
    did decode) when the video stops well short of its announced length."""
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    capture, info = open_video(path)
    step = sampling_step(info, fps)
    next_sample = 0.0
    index = 0
    try:
        while True:
            if index + 1e-6 >= next_sample:
                ok, image = capture.read()
                if not ok or image is None:
                    break
                yield Frame(index, index / info.fps, image)
                next_sample += step
            elif not capture.grab():
                break
            index += 1
    except cv2.error as err:
        raise VideoError(f"{info.path}: decoding failed at frame {index} ({str(err).strip()})") from None
    finally:
        capture.release()
    if index == 0:
        raise VideoError(f"{info.path}: no frame could be decoded (damaged or truncated file)")
    if info.frame_count and index < COMPLETE_SHARE * info.frame_count - 2:
        raise VideoError(
            f"{info.path}: truncated or damaged: decoding stopped at frame {index} of the {info.frame_count} "
            f"the file announces ({index / info.fps:.1f} s of {info.frame_count / info.fps:.1f} s); "
            "repair or re-export it (e.g. `ffmpeg -err_detect ignore_err -i IN OUT.mp4`) and ingest it again"
        )
