"""`partsearch ingest VIDEO_OR_DIR... --out GALLERY_DIR [--fps F] [--detector hog|NAME|PATH]
[--min-score S] [--min-height PX] [--no-reidentify] [--camera NAME] [--start ISO8601] [--workers N]`."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from partsearch.video.settings import IngestSettings

DEFAULTS = IngestSettings()


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO_OR_DIR",
                        help="video files, or folders searched recursively for videos")
    parser.add_argument("--out", required=True, help="gallery folder: crops/, records.jsonl (created or updated)")
    parser.add_argument("--fps", type=positive_float, default=DEFAULTS.fps,
                        help="frames sampled per second of video")
    parser.add_argument("--all-frames", action="store_true", help="process every frame (overrides --fps)")
    parser.add_argument("--detector", default=DEFAULTS.detector,
                        help="hog (OpenCV, no weights), a torchvision detector name (e.g. fasterrcnn_resnet50_fpn), "
                             "NAME:PATH or a weights PATH named like torchvision's files")
    parser.add_argument("--min-score", type=float, default=DEFAULTS.min_score,
                        help="drop boxes scoring below this (default: 0.5, the detector's own scale: "
                             "HOG SVM margin, torchvision probability)")
    parser.add_argument("--min-height", type=int, default=DEFAULTS.min_height, help="drop boxes lower than this (pixels)")
    parser.add_argument("--motion-gate", action="store_true",
                        help="fixed cameras, HOG only: run the detector only where the frame moves (about 3x faster; "
                             "docs/VIDEO.md says what it costs)")
    parser.add_argument("--no-reidentify", dest="reidentify", action="store_false",
                        help="give a person who leaves the view and comes back a new track (default: one track, "
                             "joined by the colour of their clothes; docs/VIDEO.md)")
    parser.add_argument("--camera", default=None,
                        help="the camera's name for every video given (default: the camera in the video's "
                             "sidecar, cam1.mp4 -> cam1.mp4.json, else the video's file stem)")
    parser.add_argument("--start", default=None, metavar="ISO8601",
                        help="wall-clock time of the first frame of the one video given, e.g. "
                             "2026-01-31T08:00:00+01:00 (no offset: UTC); for several videos write a sidecar "
                             "cam1.mp4.json {\"camera\": ..., \"start\": ...} beside each (docs/VIDEO.md)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="frames HOG works on at once, one thread each (default: the usable cores, at most 8); "
                             "the output is the same for any number; the motion gate and torchvision detectors "
                             "take frames one at a time")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (torchvision detectors)")


def run(args: argparse.Namespace) -> int:
    from partsearch.cli import invocation
    from partsearch.device import resolve_device
    from partsearch.video.ingest import ingest

    settings = IngestSettings(fps=None if args.all_frames else args.fps, detector=args.detector,
                              min_score=args.min_score, min_height=args.min_height,
                              motion_gate=args.motion_gate, reidentify=args.reidentify)
    device = "cpu" if args.detector == "hog" else str(resolve_device(args.device))
    report = ingest(args.videos, args.out, settings, device=device, camera=args.camera, start=args.start,
                    workers=args.workers)
    print(report.summary())
    print(f"next: {next_command(invocation(), args.out, report)}")
    return 1 if report.count("failed") else 0


def next_command(program: str, out: str, report) -> str:
    """The `partsearch index` line to paste next, shell-quoted, with a --video-root for each
    folder of videos outside the gallery (the index serves only videos inside those)."""
    gallery = Path(out).resolve()
    roots = []
    for video in report.videos:
        if video.status == "failed":
            continue
        folder = Path(video.path).resolve().parent
        if folder != gallery and gallery not in folder.parents and str(folder) not in roots:
            roots.append(str(folder))
    words = ["index", "RUN_DIR", "--images", out, *(w for r in roots for w in ("--video-root", r)), "--out", "INDEX_DIR"]
    return f"{program} {shlex.join(words)}"
