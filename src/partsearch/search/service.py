"""The search index over HTTP (FastAPI) with a web page; `partsearch serve` (`commands/serve.py`) runs it.

Endpoints (JSON unless said otherwise; errors, unexpected ones included, are `{"detail": message}`):
- `GET /` the web page (its assets under `/static/`, all served here, no CDN); `GET /healthz`.
- `POST /api/search` `{"query": str = "", "top_k": int = 10, "like": id | null, "text_weight": float = 0.25,
  "filters": {"cameras", "videos", "tracks", "after", "before", "min_score"} | null}` -> `{"query",
  "truncated", "score_max", "match_threshold" (null when unknown or for an image query), "match_rule"
  ("gallery": standing out from this footage for this query, "model": the model's from its validation
  split, null: none), "image"
  ({"id", "name"} for `like`), "text_weight", "filters", "results": [{"rank", "id", "score", "levels":
  {"global","coarse","fine"}, "parts": {"coarse": [...], "fine": [...]}, "name", "relpath", "source",
  "url", "video": null | {"video", "camera", "frame", "time", "wall_time", "box", "track", "frame_url",
  "video_url"}}]}` (`Searcher.query`). No text and no `like`, top_k outside 1..1000 or a bad filter -> 422;
  an unknown `like` -> 404.
- `POST /api/search/image` multipart: `file` (a photo), and form fields `query`, `top_k`,
  `text_weight`, `filters` (JSON): a search by photo, alone or with a text; the same answer
  (`"image": {"upload": file name}`). Nothing is stored. Not an image -> 400, too large -> 413.
- `POST /api/search/tracks` `{"query": str, "top_k": int = 10, "aggregate": "mean-top3" | "max", "filters",
  "literal"}` (default mean-top3) -> `{"query", "truncated", "aggregate", "score_max", "match_threshold", "match_rule",
  "filters", "parsed", "results": [{"rank", "video", "camera",
  "track", "score", "crops", "start", "end", "start_wall_time", "end_wall_time", "visits",
  "best": {"id", "score", "name", "relpath", "frame",
  "time", "box", "url", "frame_url", "video_url", "video_type"}}]}`: tracks of an index of `partsearch ingest` crops
  (`Searcher.query_tracks`); an index without tracks, or an unknown aggregate -> 422.
- `GET /api/images/{id}` the image file, by manifest id only (anything else -> 404).

Every file is served only when it is what the index put there: a regular file that, links
followed, lies inside the folder it was indexed under (the images root or uploads/ for an image;
the gallery or a `--video-root` for a video), with the sha256 (image) or size and mtime (video) it
had then; otherwise 409 (replaced, or a link leading elsewhere) or 404 (gone), as JSON.
- `GET /api/images/{id}/frame` a video crop's frame re-read from its video, with the box drawn
  (JPEG); 404 for an image that is not a video crop or a video that cannot be read.
- `GET /api/images/{id}/video` the video a crop was cut from, the file as it is, with HTTP range
  requests (206 Partial Content; a malformed or unsatisfiable Range is a JSON 400 / 416), so a
  browser's <video> can seek to the crop's time; its type from its suffix (`VIDEO_MEDIA`). 404 for an image that is not a video crop or a video no longer
  on disk. Only videos that index records name are served, by image id, never by path.
- `GET /api/images/{id}/explain?query=...` -> `explain.explain`'s JSON: per-part scores and heatmap
  overlays (foreground map and one per fine stripe) as PNG data URLs. A file replaced since indexing
  by one that is not an image within the pixel limit -> 409.
- Sightings and cases: `case_routes.py` (a case change or export needs the API key, as an upload).
- `POST /api/images` (multipart field `file`) and `DELETE /api/images/{id}`: only with the server's
  API key in the `X-API-Key` header; with no key configured they answer 403. An upload must decode
  as JPEG, PNG or WebP, within MAX_UPLOAD_BYTES and the pixel limit; otherwise 4xx and nothing is
  written. It is stored under INDEX_DIR/uploads/ and added to the index in a new generation. A delete
  removes the image from the index; only an upload's file is deleted from disk, never the user's. A
  full disk answers 507 and leaves the index as it was.

Searches run concurrently on an immutable generation; uploads and deletes are serialised by a
lock (and the index's file lock, so a concurrent `partsearch index` waits) and swap the generation.
The server binds 127.0.0.1 unless told otherwise; the Host, API key and body size checks that come
before any route are `service_access.py`'s.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from fastapi import FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from partsearch.errors import StorageError, UnsafeFile
from partsearch.data.images import MAX_IMAGE_PIXELS, ImageRejected, ImageTooLarge
from partsearch.search import writes as index_ops
from partsearch.search.case_routes import add_case_routes
from partsearch.search.explain import explain
from partsearch.search.filters import Filters
from partsearch.search.searcher import TEXT_WEIGHT, QueryError, Searcher
from partsearch.search.service_access import LOOPBACK_HOSTS, RequestGuard
from partsearch.search.tracks import DEFAULT_AGGREGATE, frame_with_box, video_file

WEB_DIR = Path(__file__).parent / "web"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # [ours]
_ID = re.compile(r"[0-9]{1,18}")
_MEDIA = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
# What a <video> element is told it gets; the page asks the browser (canPlayType) before trying.
VIDEO_MEDIA = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
               ".mkv": "video/x-matroska", ".ogv": "video/ogg", ".avi": "video/x-msvideo", ".mpg": "video/mpeg",
               ".mpeg": "video/mpeg", ".ts": "video/mp2t", ".mts": "video/mp2t", ".m2ts": "video/mp2t",
               ".wmv": "video/x-ms-wmv", ".flv": "video/x-flv", ".3gp": "video/3gpp"}


class SearchRequest(BaseModel):
    query: str
    top_k: int = 10


class CropSearchRequest(SearchRequest):
    query: str = ""
    like: int | None = None  # an indexed image's id: "more like this"
    text_weight: float = TEXT_WEIGHT  # with a text and `like`
    filters: dict | None = None  # `filters.Filters` fields
    literal: bool = False  # true: no filter phrases are taken from the query ("on camera 2")


class TrackSearchRequest(SearchRequest):
    aggregate: str = DEFAULT_AGGREGATE
    filters: dict | None = None  # `filters.Filters` fields
    literal: bool = False


def _parse_id(image_id: str) -> int:
    if not _ID.fullmatch(image_id):
        raise HTTPException(404, f"no image with id {_echo(image_id)}; ids are the integers search results give")
    return int(image_id)


def _echo(text: str, limit: int = 40) -> str:
    """`text` as a message may repeat it: quoted, and cut at `limit` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _range_refusal(range_header: str | None, size: int) -> SafeJSON | None:
    """The JSON answer to a Range header that cannot be served (400 malformed, 416 outside the
    file), checked before the file is streamed, so range errors are JSON like every other."""
    if range_header is None:
        return None
    try:
        FileResponse._parse_range_header(range_header, size)
    except MalformedRangeHeader as err:
        return SafeJSON({"detail": f"Range {_echo(range_header)}: {err.content}"}, status_code=400)
    except RangeNotSatisfiable:
        return SafeJSON({"detail": f"Range {_echo(range_header)} starts beyond the file's {size} bytes"},
                            status_code=416, headers={"Content-Range": f"bytes */{size}"})
    return None


class SafeJSON(JSONResponse):
    """JSON with every non-ASCII character written as a \\u escape: a name that is not valid text
    (a video file named in bytes that are not UTF-8 gives Python a lone surrogate) is sent as its
    escape instead of failing to encode, and every other character reads back the same."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def create_app(index: str | Path | Searcher, api_key: str | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_pixels: int = MAX_IMAGE_PIXELS,
               allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS) -> FastAPI:
    """The FastAPI app over an index directory (its model is loaded from the run it records) or
    over a ready `Searcher`. Requests must name one of `allowed_hosts` in their Host header
    (loopback names by default; None accepts any)."""
    searcher = index if isinstance(index, Searcher) else Searcher(index)
    mutation = threading.Lock()
    app = FastAPI(title="partsearch", description="Text-based person search with part-level correspondence",
                  default_response_class=SafeJSON)
    app.state.searcher = searcher
    app.add_middleware(RequestGuard, allowed_hosts=allowed_hosts, api_key=api_key, max_upload_bytes=max_upload_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, err: StarletteHTTPException):
        # FastAPI's own handler, written through SafeJSON: a detail may name a file whose name is not valid text.
        return SafeJSON({"detail": err.detail}, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        # One readable line ("top_k: Input should be a valid integer"), not pydantic's list.
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'request'}: {e.get('msg', '')}"
                 for e in err.errors()]
        return SafeJSON({"detail": "; ".join(parts)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        # Still JSON, so the page can show it; the traceback goes to the server's log.
        return SafeJSON({"detail": f"internal error ({type(err).__name__}); see the server log"}, status_code=500)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    def lookup(image_id: str):
        try:
            return searcher.entry(_parse_id(image_id))
        except KeyError:
            raise HTTPException(404, f"no image with id {_echo(image_id)} in this index") from None

    def checked_video(image_id: str) -> tuple[Path, object]:
        """The video file of a crop, as `tracks.video_file` allows it (404 gone, 409 not the one indexed)."""
        entry, _, gen = lookup(image_id)
        if entry.video is None:
            raise HTTPException(404, f"image {image_id} is not a crop of a video")
        try:
            return video_file(searcher.store.images_root(gen.meta), entry.video), entry.video
        except FileNotFoundError:
            raise HTTPException(404, f"the video of image {image_id} ({Path(entry.video.video).name}) is no longer "
                                     "on disk (moved or deleted since `partsearch ingest`)") from None
        except UnsafeFile:
            raise HTTPException(409, f"the video of image {image_id} ({Path(entry.video.video).name}) is not the "
                                     "file that was indexed (replaced, "
                                     "or a link leading elsewhere); re-run `partsearch index`") from None

    add_case_routes(app, searcher)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    @app.get("/healthz")
    def healthz():
        gen = searcher.current()
        return {"status": "ok", "images": len(gen.entries), "tracks": len(gen.tracks), "generation": gen.name,
                "uploads": api_key is not None}

    @app.post("/api/search")
    def search(request: CropSearchRequest):
        try:
            response = searcher.query(request.query, request.top_k, like=request.like,
                                      filters=Filters.from_dict(request.filters), text_weight=request.text_weight,
                                      words=not request.literal)
        except QueryError as err:
            raise HTTPException(422, str(err)) from None
        except KeyError:
            raise HTTPException(404, f"no image with id {request.like!r} in this index") from None
        return _public(response.to_dict())

    @app.post("/api/search/image")
    def search_image(file: UploadFile = File(...), query: str = Form(""), top_k: int = Form(10),
                     text_weight: float = Form(TEXT_WEIGHT), filters: str = Form("")):
        # A search by photo: nothing is stored; the photo is decoded within the pixel limit.
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"{file.filename}: over the upload limit of {max_upload_bytes} bytes")
        try:
            parsed = Filters.from_dict(json.loads(filters)) if filters.strip() else Filters()
        except ValueError:
            raise HTTPException(422, f"filters {filters[:80]!r} is not a JSON object") from None
        except QueryError as err:
            raise HTTPException(422, str(err)) from None
        try:
            response = searcher.query(query, top_k, image=data, filters=parsed, text_weight=text_weight,
                                      image_name=Path(file.filename or "upload").name)
        except ImageTooLarge as err:
            raise HTTPException(413, str(err)) from None
        except ImageRejected as err:
            raise HTTPException(400, str(err)) from None
        except QueryError as err:
            raise HTTPException(422, str(err)) from None
        return _public(response.to_dict())

    @app.post("/api/search/tracks")
    def search_tracks(request: TrackSearchRequest):
        try:
            response = searcher.query_tracks(request.query, request.top_k, request.aggregate,
                                             Filters.from_dict(request.filters), words=not request.literal)
        except QueryError as err:
            raise HTTPException(422, str(err)) from None
        body = response.to_dict()
        for result in body["results"]:
            del result["best"]["path"], result["video_path"]
            result["best"]["url"] = f"/api/images/{result['best']['id']}"
            result["best"]["frame_url"] = f"/api/images/{result['best']['id']}/frame"
            result["best"]["video_url"] = f"/api/images/{result['best']['id']}/video"
            result["best"]["video_type"] = VIDEO_MEDIA.get(Path(result["video"]).suffix.lower(),
                                                           "application/octet-stream")
            result["video"] = Path(result["video"]).name  # a name to show; the file is reached by video_url
        return body

    @app.get("/api/images/{image_id}/frame")
    def frame(image_id: str):
        path, record = checked_video(image_id)
        try:
            data = frame_with_box(path, record)
        except FileNotFoundError:
            raise HTTPException(404, f"the frame of image {image_id} cannot be read from its video "
                                     "(the video is unreadable)") from None
        return Response(data, media_type="image/jpeg")

    @app.get("/api/images/{image_id}/video")
    def video(image_id: str, request: Request):
        path, _ = checked_video(image_id)
        refusal = _range_refusal(request.headers.get("range"), path.stat().st_size)
        if refusal is not None:
            return refusal
        return FileResponse(path, media_type=VIDEO_MEDIA.get(path.suffix.lower(), "application/octet-stream"))

    @app.get("/api/images/{image_id}")
    def image(image_id: str):
        entry, _, gen = lookup(image_id)
        try:
            data = searcher.read_image(entry, gen)
        except FileNotFoundError:
            raise HTTPException(404, f"image {image_id} ({entry.name}) is no longer on disk; re-run `partsearch index`") from None
        except UnsafeFile:
            raise HTTPException(409, f"image {image_id} ({entry.name}) is not the file that was indexed (replaced, "
                                     "or a link leading elsewhere); re-run `partsearch index`") from None
        return Response(data, media_type=_MEDIA.get(Path(entry.path).suffix.lower(), "application/octet-stream"))

    @app.get("/api/images/{image_id}/explain")
    def explain_image(image_id: str, query: str = Query("")):
        entry, _, _ = lookup(image_id)
        try:
            return explain(searcher, entry.id, query, max_pixels)
        except QueryError as err:
            raise HTTPException(422, str(err)) from None
        except KeyError:
            raise HTTPException(404, f"no image with id {image_id!r} in this index") from None
        except FileNotFoundError:
            raise HTTPException(404, f"image {image_id} ({entry.path}) is no longer on disk") from None
        except ImageRejected as err:
            raise HTTPException(409, f"image {image_id} changed on disk since it was indexed: {err}; "
                                     "re-run `partsearch index`") from None
        except UnsafeFile:
            raise HTTPException(409, f"image {image_id} ({entry.name}) is not the file that was indexed (replaced, "
                                     "or a link leading elsewhere); re-run `partsearch index`") from None

    @app.post("/api/images")
    def upload(file: UploadFile = File(...), x_api_key: str | None = Header(None)):
        # The key was checked by RequestGuard before the body was read; the parameter documents it.
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"{file.filename}: over the upload limit of {max_upload_bytes} bytes")
        name = Path(file.filename or "upload").name
        with mutation:
            try:
                entry, added, gen = index_ops.add_image(searcher.store, searcher.encoder, data, name, max_pixels)
            except ImageTooLarge as err:
                raise HTTPException(413, str(err)) from None
            except ImageRejected as err:
                raise HTTPException(400, str(err)) from None
            except StorageError as err:
                raise HTTPException(507, str(err)) from None
            searcher.set_generation(gen)
        return SafeJSON({"id": entry.id, "name": entry.name, "added": added, "images": len(gen.entries),
                             "url": f"/api/images/{entry.id}"}, status_code=201 if added else 200)

    @app.delete("/api/images/{image_id}")
    def delete(image_id: str, x_api_key: str | None = Header(None)):
        entry, _, _ = lookup(image_id)
        with mutation:
            try:
                removed, gen = index_ops.delete_image(searcher.store, entry.id)
            except KeyError:
                raise HTTPException(404, f"no image with id {image_id!r} in this index") from None
            except StorageError as err:
                raise HTTPException(507, str(err)) from None
            searcher.set_generation(gen)
        return {"deleted": removed.id, "name": removed.name, "images": len(gen.entries)}

    return app


def _public(body: dict) -> dict:
    """A crop response for HTTP clients: URLs instead of paths on the server."""
    for result in body["results"]:
        del result["path"]  # the server's file system stays private
        result["url"] = f"/api/images/{result['id']}"
        video = result.get("video")
        if video is not None:
            for private in ("path", "root", "size", "mtime_ns"):  # the server's path; what the indexer checked
                video.pop(private, None)
            video["frame_url"] = f"/api/images/{result['id']}/frame"
            video["video_url"] = f"/api/images/{result['id']}/video"
            video["video_type"] = VIDEO_MEDIA.get(Path(video["video"]).suffix.lower(), "application/octet-stream")
            video["video"] = Path(video["video"]).name  # a name to show; the file is reached by video_url
    return body
