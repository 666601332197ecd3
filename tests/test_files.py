import pytest

from partsearch.files import atomic_path, write_text_atomic


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_a_failure_mid_write_keeps_the_previous_version(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
