"""The command line's own behaviour (each command's is tested with its package)."""

import sys

from partsearch.cli import invocation


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
