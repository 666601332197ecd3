"""Several cameras: every record names its camera and, when the video's start is known, the
wall-clock time of its frame (`partsearch.video.cameras`, `ingest --camera --start`, sidecars)."""

import json
import shutil

import pytest
from video_fakes import ReplayDetector

from partsearch.cli import main
from partsearch.errors import DataError
from partsearch.video.cameras import VideoSource, parse_start, with_source_fields
from partsearch.video.ingest import IngestSettings, ingest, read_records

FPS = 5.0
SAMPLED = list(range(0, 64, 2))


def _replay(street):
    return ReplayDetector(street, SAMPLED, jitter=0, drop=0.0)


def _two_cameras(street, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("gate.avi", "hall.avi"):
        shutil.copy(street.path, folder / name)
    return folder


def test_without_camera_or_start_a_record_names_the_file_stem_and_no_wall_time(street, tmp_path):
    ingest([street.path], tmp_path / "g", IngestSettings(fps=FPS), detector=_replay(street), progress=False)
    records = read_records(tmp_path / "g")
    assert records and {(r["camera"], r["wall_time"]) for r in records} == {("street", None)}


def test_camera_and_start_give_every_record_its_camera_and_wall_clock_time(street, tmp_path):
    ingest([street.path], tmp_path / "g", IngestSettings(fps=FPS), detector=_replay(street), progress=False,
           camera="gate", start="2026-01-31T08:00:00+01:00")
    records = read_records(tmp_path / "g")
    assert records and {r["camera"] for r in records} == {"gate"}
    for r in records:
        assert r["wall_time"] == VideoSource("gate", parse_start("2026-01-31T08:00:00+01:00", "")).wall_time(r["time"])
    late = max(records, key=lambda r: r["frame"])
    assert late["frame"] == 62 and late["wall_time"] == "2026-01-31T08:00:06.200+01:00"


def test_a_start_without_offset_is_utc():
    assert VideoSource("c", parse_start("2026-01-31T08:00:00", "--start")).wall_time(1.5) == "2026-01-31T08:00:01.500+00:00"


def test_a_folder_of_videos_ingests_as_one_camera_per_file_with_sidecar_names_and_starts(street, tmp_path):
    folder = _two_cameras(street, tmp_path)
    (folder / "hall.avi.json").write_text(json.dumps({"camera": "main hall", "start": "2026-01-31T09:30:00Z"}))
    detector = ReplayDetector(street, SAMPLED, jitter=0, drop=0.0)
    ingest([folder], tmp_path / "g", IngestSettings(fps=FPS), detector=detector, progress=False)
    by_camera = {}
    for r in read_records(tmp_path / "g"):
        by_camera.setdefault(r["camera"], set()).add(r["wall_time"] is None)
    assert by_camera == {"gate": {True}, "main hall": {False}}
    hall = [r for r in read_records(tmp_path / "g") if r["camera"] == "main hall"]
    assert all(r["wall_time"] == f"2026-01-31T09:30:0{r['time']:.3f}+00:00" for r in hall if r["time"] < 10)


def test_a_new_camera_name_ingests_a_finished_video_again(street, tmp_path):
    ingest([street.path], tmp_path / "g", IngestSettings(fps=FPS), detector=_replay(street), progress=False)
    report = ingest([street.path], tmp_path / "g", IngestSettings(fps=FPS), detector=_replay(street),
                    progress=False, camera="gate")
    assert report.videos[0].status == "ingested"
    assert {r["camera"] for r in read_records(tmp_path / "g")} == {"gate"}


def test_start_for_several_videos_is_refused_before_any_work(street, tmp_path):
    folder = _two_cameras(street, tmp_path)
    with pytest.raises(DataError, match="--start gives the start of one video, but 2 were given"):
        ingest([folder], tmp_path / "g", IngestSettings(fps=FPS), detector=_replay(street), progress=False,
               start="2026-01-31T08:00:00")
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("text, message", [
    ("{not json", "not a readable JSON sidecar"),
    ('{"camera": "gate", "begin": "x"}', "keys camera and start only"),
    ('{"start": "yesterday"}', "'yesterday' is not an ISO 8601 date-time"),
    ('{"camera": ""}', "camera must be a non-empty string"),
])
def test_a_bad_sidecar_is_named_with_the_fix_and_nothing_is_written(street, tmp_path, text, message):
    video = tmp_path / "gate.avi"
    shutil.copy(street.path, video)
    (tmp_path / "gate.avi.json").write_text(text)
    with pytest.raises(DataError, match=message) as err:
        ingest([video], tmp_path / "g", IngestSettings(fps=FPS), detector=_replay(street), progress=False)
    assert "gate.avi.json" in str(err.value)
    assert not (tmp_path / "g").exists()


def test_the_command_line_takes_camera_and_start_and_rejects_a_bad_start(street, tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["ingest", str(street.path), "--out", str(out), "--fps", "1", "--camera", "gate",
                 "--start", "2026-01-31T08:00:00Z"]) == 0
    records = read_records(out)
    assert records and all(r["camera"] == "gate" and r["wall_time"].startswith("2026-01-31T08:00:0") for r in records)
    capsys.readouterr()
    assert main(["ingest", str(street.path), "--out", str(tmp_path / "h"), "--start", "8 o'clock"]) == 2
    err = capsys.readouterr().err
    assert "--start: \"8 o'clock\" is not an ISO 8601 date-time" in err and "Traceback" not in err


def test_a_record_of_an_older_gallery_gets_the_file_stem_as_camera_and_no_wall_time():
    old = {"crop": "crops/cam1/x_avi/t0001_f000000.jpg", "video": "../videos/cam1/x.avi", "frame": 0, "time": 0.0,
           "box": [0, 0, 10, 20], "track": 1}
    assert with_source_fields(old) == {**old, "camera": "x", "wall_time": None}


def test_a_camera_name_that_is_not_valid_text_is_refused_before_anything_is_written(street, tmp_path, capsys):
    # bytes that are not UTF-8 on a command line reach Python as lone surrogates
    assert main(["ingest", str(street.path), "--out", str(tmp_path / "g"), "--camera", "gate\udcff"]) == 2
    err = capsys.readouterr().err
    assert "--camera: the camera name" in err and "not valid text" in err and "Traceback" not in err
    assert not (tmp_path / "g").exists()


def test_a_sidecar_camera_that_is_not_valid_text_is_refused_naming_the_sidecar(street, tmp_path):
    from partsearch.video.cameras import resolve_sources

    video = tmp_path / "gate.avi"
    shutil.copy(street.path, video)
    (tmp_path / "gate.avi.json").write_text('{"camera": "gate\\udcff"}')
    with pytest.raises(DataError, match=r"gate\.avi\.json: the camera name .* not valid text"):
        resolve_sources([video])


def test_a_file_stem_that_is_not_valid_text_names_its_camera_with_replacement_characters(tmp_path):
    from partsearch.video.cameras import resolve_sources

    assert resolve_sources([tmp_path / "gate\udcff.avi"])[0].camera == "gate\ufffd"
