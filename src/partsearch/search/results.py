"""What a search answers: crop results (`SearchResult`, `SearchResponse`) and track results
(`TrackResult`, `TrackCrop`, `TrackResponse`), as `Searcher` returns them and `to_dict` gives them
to the CLI's --json and the HTTP API.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SearchResult:
    rank: int
    id: int
    score: float  # s(v, t) = w_g global + w_c coarse + w_f fine
    levels: dict[str, float]  # "global", "coarse", "fine": cosine, mean over tokens/parts
    parts: dict[str, list[float]]  # "coarse": N_c cosines, "fine": P cosines (stripe i <-> text token i)
    regions: list[str]  # body region of each fine stripe, head to feet (`eval.parts.stripe_regions`)
    name: str
    relpath: str  # relative to the images root (or to uploads/)
    source: str
    path: str  # absolute path on this machine
    # Where and when a crop of `partsearch ingest` was seen (`tracks.VideoRecord.where`: video,
    # camera, frame, time, wall_time, box, track; plus "path", the video's absolute path on this
    # machine, as `path` is the crop's); None for plain images and uploads.
    video: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResponse:
    query: str  # as searched, cut at MAX_QUERY_CHARS: a huge request is never echoed back ("" for an image alone)
    truncated: bool  # the query was cut at the tokenizer's limit
    results: list[SearchResult]
    score_max: float = 3.0  # the largest possible score, w_g + w_c + w_f (scores lie in [-max, max])
    match_threshold: float | None = None  # below it a result is a weak match (`threshold.py`)
    image: dict | None = None  # the query image: {"id": indexed image} or {"upload": file name}; None for text
    text_weight: float | None = None  # with text and image: the text score's weight
    filters: dict | None = None  # `Filters.to_dict`, None when unfiltered
    parsed: list[dict] = field(default_factory=list)  # filter phrases taken from the text: [{"words", "means"}]
    match_rule: str | None = None  # what `match_threshold` is: "gallery", "model" or None (`threshold.rule`)

    def to_dict(self) -> dict:
        return {"query": self.query, "truncated": self.truncated, "score_max": self.score_max,
                "match_threshold": self.match_threshold, "match_rule": self.match_rule, "image": self.image,
                "text_weight": self.text_weight, "filters": self.filters, "parsed": self.parsed,
                "results": [r.to_dict() for r in self.results]}


@dataclass
class TrackCrop:
    """A track's best crop: its image and where it was seen."""

    id: int
    score: float  # s(v, t) of this crop
    name: str
    relpath: str
    path: str  # absolute path on this machine
    frame: int
    time: float  # seconds from the start of the video
    box: list[int]  # [x1, y1, x2, y2] in frame pixels, x2/y2 exclusive
    wall_time: str | None = None  # ISO 8601 when the camera's start is known


@dataclass
class TrackResult:
    rank: int
    video: str  # the video file, relative to the index's images root; (video, track) is the key
    track: int
    camera: str
    score: float  # the crops' scores aggregated (`TrackResponse.aggregate`)
    crops: int  # crops of this track in the index
    start: float  # time of its first and last crop, seconds
    end: float
    best: TrackCrop
    video_path: str = ""  # the video's absolute path on this machine (HTTP leaves it out, as it does `path`)
    # ISO 8601 wall-clock times of its first and last crop when the camera's start is known, else None
    start_wall_time: str | None = None
    end_wall_time: str | None = None
    # [(start, end)] seconds: one per visit, the person unseen for over `tracks.VISIT_GAP_S` between
    visits: list[tuple[float, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrackResponse:
    query: str
    truncated: bool
    results: list[TrackResult]
    aggregate: str  # how a track's score is made from its crops' (`tracks.AGGREGATES`)
    score_max: float = 3.0
    match_threshold: float | None = None  # for a crop's score: the best crop's (`TrackCrop.score`)
    filters: dict | None = None  # as `SearchResponse`
    parsed: list[dict] = field(default_factory=list)
    match_rule: str | None = None  # as `SearchResponse`

    def to_dict(self) -> dict:
        return {"query": self.query, "truncated": self.truncated, "aggregate": self.aggregate,
                "score_max": self.score_max, "match_threshold": self.match_threshold,
                "match_rule": self.match_rule, "filters": self.filters, "parsed": self.parsed,
                "results": [r.to_dict() for r in self.results]}
