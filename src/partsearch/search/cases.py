"""Cases: named sets of sightings with notes and decisions, kept beside the index they came from.

A case lives in `INDEX_DIR/cases/<name>/`: `case.json` (format `partsearch-case/1`: name, notes,
created, and its sightings) and `files/`, the case's own copies of each sighting's crop and of the
frame it was seen in with the box drawn, made when the sighting is added. Segments, catalogues
and compaction never touch `cases/`, and a sighting is keyed by its video and track (or, for a
plain image, its image id), which compaction keeps, so a case survives restarts, compaction and
the deletion of its sources: its copies stay, and what cannot be had any more is named
(`export.export_case`).

A sighting's `decision` is "confirmed" (the same person), "rejected" (not this person) or None
(found, not decided); `sightings.find_sightings` uses a case's decisions when re-ranking.
Every write replaces case.json atomically under the index's lock.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from partsearch.errors import QueryError
from partsearch.files import write_text_atomic
from partsearch.search.store import IndexStore, storage

FORMAT = "partsearch-case/1"
DECISIONS = ("confirmed", "rejected")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class Sighting:
    """One sighting: a track of a video (`video`, `track`; `id` its best crop) or a plain image
    (`id`, with `video` None), where and when it was seen, the score and query that found it."""

    id: int
    video: str | None = None
    camera: str | None = None
    track: int | None = None
    frame: int | None = None
    time: float | None = None
    wall_time: str | None = None
    box: list[int] | None = None
    start: float | None = None  # first and last crop of the track, seconds in the video
    end: float | None = None
    score: float | None = None
    query: str = ""
    decision: str | None = None
    note: str = ""
    crop: str | None = None  # the case's own copies, relative to the case folder
    frame_image: str | None = None
    relpath: str = ""  # the crop's path in the index (relative to its images root or uploads/)

    @property
    def key(self) -> tuple:
        return (self.video, self.track) if self.video is not None else ("image", self.id)


@dataclass
class Case:
    name: str
    notes: str = ""
    created: str = ""
    sightings: list[Sighting] = field(default_factory=list)

    def find(self, key: tuple) -> Sighting | None:
        return next((s for s in self.sightings if s.key == key), None)

    def keys(self, decision: str) -> list[tuple]:
        return [s.key for s in self.sightings if s.decision == decision]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "name": self.name, "notes": self.notes, "created": self.created,
                "sightings": [asdict(s) for s in self.sightings]}


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise QueryError(f"case name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit")
    return name


class CaseStore:
    """The cases of one index directory."""

    def __init__(self, index: IndexStore | str | Path):
        self.index = index if isinstance(index, IndexStore) else IndexStore(index)
        self.root = self.index.root / "cases"

    def folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "case.json").is_file())

    def load(self, name: str, create: bool = False) -> Case:
        path = self.folder(name) / "case.json"
        if not path.is_file():
            if create:
                now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                return Case(name, created=now)
            known = ", ".join(self.names()) or "none yet"
            raise QueryError(f"no case {name!r} in {self.root} (cases: {known}); add a sighting to create it")
        try:
            values = json.loads(path.read_text())
            if values.get("format") != FORMAT:
                raise ValueError(f"format {values.get('format')!r} is not {FORMAT}")
            sightings = [Sighting(**s) for s in values["sightings"]]
            return Case(values["name"], values.get("notes", ""), values.get("created", ""), sightings)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise QueryError(f"case file {path} is unreadable ({err}); restore it or remove the folder") from None

    def save(self, case: Case) -> None:
        folder = self.folder(case.name)
        with storage(f"case {folder}"):
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / "case.json", json.dumps(case.to_dict(), indent=1))

    def keep_copy(self, case: Case, sighting: Sighting, crop: Path | None, frame_jpeg: bytes | None) -> None:
        """Copy the sighting's crop and its frame (JPEG bytes) into the case's own files/."""
        files = self.folder(case.name) / "files"
        stem = f"{len(case.sightings):04d}_{sighting.id}"
        with storage(f"case files {files}"):
            files.mkdir(parents=True, exist_ok=True)
            if crop is not None and crop.is_file():
                target = files / f"{stem}_crop{crop.suffix.lower()}"
                shutil.copyfile(crop, target)
                sighting.crop = target.relative_to(files.parent).as_posix()
            if frame_jpeg is not None:
                target = files / f"{stem}_frame.jpg"
                target.write_bytes(frame_jpeg)
                sighting.frame_image = target.relative_to(files.parent).as_posix()

    def update(self, name: str, sighting: Sighting, crop: Path | None = None, frame_jpeg: bytes | None = None) -> Case:
        """Add `sighting` to case `name` (created when new), or, when the case holds its track
        already, set its decision and note (a decision given as None keeps the old one)."""
        if sighting.decision not in (None, *DECISIONS):
            raise QueryError(f"decision {sighting.decision!r}: use one of {', '.join(DECISIONS)}")
        with self.index.lock():
            case = self.load(name, create=True)
            held = case.find(sighting.key)
            if held is None:
                self.keep_copy(case, sighting, crop, frame_jpeg)
                case.sightings.append(sighting)
            else:
                held.decision = sighting.decision or held.decision
                held.note = sighting.note or held.note
            self.save(case)
        return case

    def set_notes(self, name: str, notes: str) -> Case:
        with self.index.lock():
            case = self.load(name)
            case.notes = notes
            self.save(case)
        return case
