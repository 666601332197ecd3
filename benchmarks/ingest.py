"""`partsearch ingest` throughput: sampled frames per second through the code users run
(`partsearch.video.ingest.ingest`: decode, detect, track, write crops and records).

The video is `--video PATH` (e.g. `vtest.avi` from Debian's `opencv-doc` package: 768x576 at
10 frames/s, people on a campus path) or, by default, a synthetic street written for the run
(`partsearch.video.synth`, `--size` and `--frames`). Each repeat ingests into a fresh gallery.
Decoding alone (the same frame sampling, no detection) is timed too, so the detector's share is
visible. OpenCV's threads are set to `--threads`. `--workers 1 2` gives one row per value of
`ingest --workers` (how many frames HOG works on at once, one thread each; 1: one frame at a time
on OpenCV's `--threads` threads), measured in turn within each repeat so that a busy spell of a
shared machine falls on both, with each row's ratio to the first.
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
    parser.add_argument("--workers", type=positive, nargs="+", default=None,
                        help="values of `ingest --workers` to compare (default: ingest's default alone)")
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
        from partsearch.video.ingest import default_workers

        counts = args.workers or [default_workers()]
        runs: dict[int, list[dict]] = {w: [] for w in counts}
        times: dict[int, list[float]] = {w: [] for w in counts}
        cpu: dict[int, list[float]] = {w: [] for w in counts}

        def once(workers: int) -> None:
            out = work / f"gallery-{workers}-{len(runs[workers])}"
            result = ingest([video], out, settings, progress=False, workers=workers).videos[0]
            runs[workers].append({"sampled": result.frames, "crops": result.crops, "tracks": result.tracks,
                                  "workers": result.workers})
            shutil.rmtree(out)

        log(f"ingest {video} ({info.width}x{info.height}, {info.frame_count} frames at {info.fps:g}/s) "
            f"at {args.fps:g} frames/s, workers {counts}, {args.repeats} repeats")
        for w in counts:  # warm-up: imports, OpenCV's pool, the file in the page cache
            once(w)
        for _ in range(args.repeats):
            for w in counts:
                wall, used = wall_and_cpu(lambda w=w: once(w), 1, warmup=0)
                times[w] += wall
                cpu[w] += used
        decode_times, _ = wall_and_cpu(lambda: sum(1 for _ in sample_frames(video, args.fps)), args.repeats, warmup=0)
        video_seconds = info.frame_count / info.fps
        first = statistics.median(times[counts[0]])
        rows = []
        for w in counts:
            seconds, last = statistics.median(times[w]), runs[w][-1]
            rows.append({
                "video": label, "size": f"{info.width}x{info.height}", "video_s": video_seconds,
                "sample_fps": args.fps, "detector": args.detector + (" + motion gate" if args.motion_gate else ""),
                "workers": last["workers"], "sampled": last["sampled"], "crops": last["crops"], "tracks": last["tracks"],
                "seconds": seconds, "frames_s": last["sampled"] / seconds, "video_s_per_s": video_seconds / seconds,
                "speedup_vs_first": first / seconds,
                "decode_only_frames_s": last["sampled"] / statistics.median(decode_times),
                "measured": f"median of {args.repeats} ({min(times[w]):.1f}-{max(times[w]):.1f} s)",
                "cpu_share_pct": 100 * statistics.median(c / t for c, t in zip(cpu[w], times[w])) / args.threads,
            })
        if len({(r["crops"], r["tracks"]) for r in rows}) > 1:
            raise SystemExit(f"ingest gave other crops or tracks for another --workers: {rows}")
        notes = ["frames_s: sampled frames per wall second, the whole ingest (decode, detect, track, crops, "
                 "records); video_s_per_s: seconds of video per wall second (above 1: faster than real time)",
                 "decode_only_frames_s: the same sampling without detection",
                 "cpu_share_pct: CPU time / wall time / threads (100 = the threads had their cores)",
                 "speedup_vs_first: the first row's median wall time / this row's (same run, turns alternated)"]
        report("ingest", rows, args, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
