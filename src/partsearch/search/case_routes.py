"""The HTTP routes of sightings and cases (`service.create_app` adds them):

- `POST /api/sightings` `{"id": int, "top_k": int = 20, "case": name | null, "max_gap": seconds | null,
  "query": str = ""}` -> `sightings.SightingsResponse.to_dict()`, each sighting with `url` (its
  crop), `frame_url` and `video_url` for a video crop; an unknown id -> 404, a bad value -> 422.
- `GET /api/cases` -> `{"cases": [names]}`; `GET /api/cases/{name}` -> the case (`cases.Case`).
- `POST /api/cases/{name}/sightings` `{"id", "decision": "confirmed" | "rejected" | null, "query",
  "score", "note"}` (API key): add the track of image `id` to the case (created when new), or set
  its decision -> the case.
- `POST /api/cases/{name}/export` (API key) -> the exported folder (`export.export_case`) as a
  ZIP file, `<name>.zip`.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel

from partsearch.errors import QueryError
from partsearch.search.cases import CaseStore
from partsearch.search.export import export_case
from partsearch.search.searcher import Searcher
from partsearch.search.sightings import add_sighting, find_sightings


class SightingsRequest(BaseModel):
    id: int
    top_k: int = 20
    case: str | None = None
    max_gap: float | None = None
    query: str = ""


class DecisionRequest(BaseModel):
    id: int
    decision: str | None = None
    query: str = ""
    score: float | None = None
    note: str = ""


def _urls(item: dict) -> dict:
    item["url"] = f"/api/images/{item['id']}"
    if item.get("video") is not None:
        item["frame_url"] = f"/api/images/{item['id']}/frame"
        item["video_url"] = f"/api/images/{item['id']}/video"
    return item


def add_case_routes(app: FastAPI, searcher: Searcher) -> None:
    cases = CaseStore(searcher.store)

    def case_dict(case) -> dict:
        body = case.to_dict()
        body["sightings"] = [_urls(s) for s in body["sightings"]]
        return body

    @app.post("/api/sightings")
    def sightings(request: SightingsRequest):
        try:
            # a case that does not exist yet holds no decisions
            case = cases.load(request.case, create=True) if request.case else None
            response = find_sightings(searcher, request.id, request.top_k, case, request.max_gap, request.query)
        except QueryError as err:
            raise HTTPException(422, str(err)) from None
        except KeyError:
            raise HTTPException(404, f"no image with id {request.id!r} in this index") from None
        body = response.to_dict()
        body["source"] = _urls(body["source"])
        body["results"] = [_urls(r) for r in body["results"]]
        return body

    @app.get("/api/cases")
    def case_names():
        return {"cases": cases.names()}

    @app.get("/api/cases/{name}")
    def case(name: str):
        try:
            return case_dict(cases.load(name))
        except QueryError as err:
            raise HTTPException(404, str(err)) from None

    @app.post("/api/cases/{name}/sightings")
    def decide(name: str, request: DecisionRequest):
        try:
            updated = add_sighting(searcher, name, request.id, request.decision, request.query, request.score,
                                   request.note)
        except QueryError as err:
            raise HTTPException(422, str(err)) from None
        except KeyError:
            raise HTTPException(404, f"no image with id {request.id!r} in this index") from None
        return case_dict(updated)

    @app.post("/api/cases/{name}/export")
    def export(name: str):
        work = Path(tempfile.mkdtemp(prefix="partsearch-export-"))
        try:
            try:
                export_case(searcher, name, work / name)
            except QueryError as err:
                raise HTTPException(404, str(err)) from None
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted((work / name).rglob("*")):
                    if path.is_file():
                        archive.write(path, path.relative_to(work).as_posix())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return Response(buffer.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}.zip"'})

