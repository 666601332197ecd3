"""The command line's own behaviour (each command's is tested with its package)."""

import sys

from partsearch.cli import invocation, main
from partsearch.extras import missing_extra


def _install(tmp_path, monkeypatch, on_path: bool):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "partsearch"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(bin_dir) if on_path else str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)


def test_printed_commands_use_the_bare_name_when_it_is_on_path(tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch, on_path=True)
    assert invocation() == "partsearch"


def test_printed_commands_use_the_venv_script_when_the_venv_is_not_active(tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch, on_path=False)
    assert invocation() == "venv/bin/partsearch"


def _help(command, capsys):
    import pytest

    from partsearch.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_the_defaults(capsys):
    assert "--port PORT TCP port (default: 8000)" in _help("serve", capsys)
    assert "(default 30)" in _help("demo", capsys)
    assert "split to evaluate (default: test)" in _help("eval", capsys)
    assert "random seed (the same seed writes the same dataset) (default: 0)" in _help("synth", capsys)


def test_help_explains_every_argument(capsys):
    text = _help("search", capsys)
    assert "index_dir an index directory written by `partsearch index`" in text
    assert "--top-k TOP_K number of results, 1 to 1000 (default: 10)" in text


def test_a_command_whose_extra_is_missing_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` raises ModuleNotFoundError
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert "pip install 'partsearch[serve]'" in err and "'uvicorn'" in err


def test_a_missing_module_outside_the_extras_is_not_disguised():
    assert missing_extra(ModuleNotFoundError("no module", name="partsearch_no_such_module")) is None
    assert "partsearch[clip]" in str(missing_extra(ModuleNotFoundError("no module", name="open_clip.model")))
