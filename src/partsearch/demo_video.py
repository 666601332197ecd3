"""`partsearch demo --video PATH`: the demo's model on camera video (issue 14, item 6).

The video is ingested (`partsearch.video.ingest`, HOG + Norfair, its defaults) into
`OUT/video-gallery`, its crops are indexed with the demo's model into `OUT/video-index`, and a few
sentences are answered at track level (`Searcher.query_tracks`). Each answer keeps what a person
reviewing footage needs: the track's best crop, its time span, the video, and the frame the best
crop was cut from with the box drawn. Ingest and index are resumable, so a re-run reuses both.
"""

from __future__ import annotations

from pathlib import Path

from partsearch.report import VideoAnswer, VideoQuery, VideoSection, data_url

# Sentences in the style of the captions the model was trained on; a user's own come from
# `--video-query` [ours].
DEFAULT_QUERIES = (
    "A man wearing a dark jacket and dark trousers.",
    "A woman wearing a white top and a dark skirt.",
    "A person in a red shirt and blue jeans.",
)
TRACKS_PER_QUERY = 3
FRAME_WIDTH = 480  # the frame shown with its box is scaled down to this width [ours]


def search_video(encoder, videos: list[str], out: Path, queries: list[str],
                 tracks_per_query: int = TRACKS_PER_QUERY) -> VideoSection:
    """Ingest `videos` into `out/video-gallery`, index its crops with `encoder` into
    `out/video-index`, and answer each of `queries` with its top tracks (printed as they come)."""
    from partsearch.errors import DataError
    from partsearch.search.index import build_index
    from partsearch.search.display import format_track_table
    from partsearch.search.searcher import Searcher
    from partsearch.search.tracks import VideoRecord, frame_with_box
    from partsearch.video.ingest import ingest, read_records

    gallery, index = out / "video-gallery", out / "video-index"
    report = ingest(videos, gallery, progress=True)
    print(report.summary())
    records = read_records(gallery)
    if not records:
        raise DataError(f"no person was found in {', '.join(videos)} (the HOG detector finds upright people "
                        "about 100 px tall or more; docs/VIDEO.md), so there is nothing to search")
    build_index(encoder, gallery, index, video_records=records,
                video_roots=[Path(v.path).resolve().parent for v in report.videos if v.status != "failed"])
    searcher = Searcher(index, encoder=encoder)
    tracks = len(searcher.current().tracks)
    answers = []
    for text in queries:
        response = searcher.query_tracks(text, min(tracks_per_query, tracks))
        print(f'\nquery: "{text}"')
        print(format_track_table(response))
        found = []
        for t in response.results:
            b = t.best
            record = VideoRecord(t.video, b.frame, b.time, tuple(b.box), t.track)
            try:
                frame = frame_with_box(gallery / t.video, record, width=FRAME_WIDTH)
            except FileNotFoundError:
                frame = None
            found.append(VideoAnswer(
                rank=t.rank, score=t.score, video=Path(t.video).name, track=t.track, crops=t.crops,
                start=t.start, end=t.end, time=b.time, frame=b.frame, box=tuple(b.box),
                crop_url=data_url(Path(b.path).read_bytes(), "image/jpeg"),
                frame_url=data_url(frame, "image/jpeg") if frame is not None else None, best_score=b.score,
                visits=list(t.visits)))
        answers.append(VideoQuery(text=response.query, answers=found, aggregate=response.aggregate,
                                  match_threshold=response.match_threshold, match_rule=response.match_rule))
    done = [v for v in report.videos if v.status != "failed"]
    return VideoSection(
        videos=[Path(v.path).name for v in done],
        summary=(f"{len(done)} video(s), {len(records)} crops of {tracks} tracks "
                 f"(gallery {gallery}, index {index})"),
        queries=answers)
