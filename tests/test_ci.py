"""The suite's own rule for CI: a skip there is a failure (conftest.py)."""

import subprocess
import sys
from pathlib import Path

TEST = '''
import pytest

def test_needs_something_missing():
    pytest.skip("no such browser")
'''


def _run(tmp_path, ci: str):
    (tmp_path / "test_x.py").write_text(TEST)
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    env = {"PATH": "/usr/bin:/bin", "CI": ci, "PYTHONPATH": ":".join(sys.path)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)


def test_a_skip_in_ci_fails_naming_the_reason(tmp_path):
    result = _run(tmp_path, "true")
    assert result.returncode == 1
    assert "1 failed" in result.stdout and "skipped in CI, where every test must run: no such browser" in result.stdout


def test_a_skip_outside_ci_stays_a_skip(tmp_path):
    result = _run(tmp_path, "")
    assert result.returncode == 0 and "1 skipped" in result.stdout
