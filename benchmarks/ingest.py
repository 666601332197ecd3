"""`partsearch ingest` throughput: sampled frames per second through the code users run
(`partsearch.video.ingest.ingest`: decode, detect, track, write crops and records).

The video is `--video PATH` (e.g. `vtest.avi` from Debian's `opencv-doc` package: 768x576 at
10 frames/s, people on a campus path) or, by default, a synthetic street written for the run
(`partsearch.video.synth`, `--size` and `--frames`). Each repeat ingests into a fresh gallery.
Decoding alone (the same frame sampling, no detection) is timed too, so the detector's share is
visible. OpenCV's threads are set to `--threads` (HOG runs on OpenCV's thread pool).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import base_parser, log, positive, report, set_threads, wall_and_cpu


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("ingest", "partsearch ingest: sampled frames per second (HOG by default)")
    parser.set_defaults(repeats=3)
    parser.add_argument("--video", default=None, help="a video file (default: a synthetic street)")
    parser.add_argument("--fps", type=float, default=5.0, help="sampled frames per second of video")
    parser.add_argument("--detector", default="hog", help="as `partsearch ingest --detector`")
    parser.add_argument("--motion-gate", action="store_true", help="as `partsearch ingest --motion-gate`")
    parser.add_argument("--size", type=parse_size, default=(480, 640), help="synthetic street HxW")
    parser.add_argument("--frames", type=positive, default=100, help="synthetic street length (10 frames/s)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    import cv2

    from partsearch.video.decode import open_video, sample_frames
    from partsearch.video.ingest import IngestSettings, ingest
    from partsearch.video.synth import write_video

    cv2.setNumThreads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="partsearch-ingest-bench-"))
    try:
        if args.video:
            video, label = Path(args.video), Path(args.video).name
        else:
            people = max(2, args.size[1] // 200)
            video = write_video(work / "street.avi", num_frames=args.frames, size=args.size, people=people,
                                height=int(args.size[0] * 0.55)).path
            label = f"synthetic street, {people} people"
        _, info = open_video(video)
        settings = IngestSettings(fps=args.fps, detector=args.detector, motion_gate=args.motion_gate)
        runs: list[dict] = []

        def once():
            out = work / f"gallery-{len(runs)}"
            result = ingest([video], out, settings, progress=False).videos[0]
            runs.append({"sampled": result.frames, "crops": result.crops, "tracks": result.tracks})
            shutil.rmtree(out)

        log(f"ingest {video} ({info.width}x{info.height}, {info.frame_count} frames at {info.fps:g}/s) "
            f"at {args.fps:g} frames/s, {args.repeats} repeats")
        times, cpu = wall_and_cpu(once, args.repeats, warmup=1)
        decode_times, _ = wall_and_cpu(lambda: sum(1 for _ in sample_frames(video, args.fps)), args.repeats, warmup=0)
        seconds, sampled = statistics.median(times), runs[-1]["sampled"]
        video_seconds = info.frame_count / info.fps
        rows = [{
            "video": label, "size": f"{info.width}x{info.height}", "video_s": video_seconds,
            "sample_fps": args.fps, "detector": args.detector + (" + motion gate" if args.motion_gate else ""),
            "sampled": sampled,
            "crops": runs[-1]["crops"], "tracks": runs[-1]["tracks"], "seconds": seconds,
            "frames_s": sampled / seconds, "video_s_per_s": video_seconds / seconds,
            "decode_only_frames_s": sampled / statistics.median(decode_times),
            "measured": f"median of {args.repeats} ({min(times):.1f}-{max(times):.1f} s)",
            "cpu_share_pct": 100 * statistics.median(c / w for c, w in zip(cpu, times)) / args.threads,
        }]
        notes = ["frames_s: sampled frames per wall second, the whole ingest (decode, detect, track, crops, "
                 "records); video_s_per_s: seconds of video per wall second (above 1: faster than real time)",
                 "decode_only_frames_s: the same sampling without detection",
                 "cpu_share_pct: CPU time / wall time / threads (100 = the threads had their cores)"]
        report("ingest", rows, args, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
