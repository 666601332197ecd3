"""Ingest's progress: a bar on a terminal, a line every few seconds into a log file."""

import io

from partsearch.video.progress import Progress


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_into_a_log_one_line_every_ten_seconds_with_rate_and_eta():
    log, clock = io.StringIO(), _Clock()
    progress = Progress("cam1_mp4", 400, stream=log, clock=clock)
    for _ in range(100):  # 100 frames over 25 s, 4 frames/s
        clock.now += 0.25
        progress.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[-1] == "cam1_mp4: 80/400 frames (20%), 4.0 frames/s, ETA 80 s"


def test_on_a_terminal_a_bar_is_drawn_and_no_log_lines():
    terminal, clock = _Terminal(), _Clock()
    progress = Progress("cam1_mp4", 10, stream=terminal, clock=clock)
    for _ in range(10):
        clock.now += 5
        progress.update(1)
    progress.close()
    assert "frames/s, ETA" not in terminal.getvalue() and "cam1_mp4" in terminal.getvalue()


def test_disabled_progress_writes_nothing():
    log, clock = io.StringIO(), _Clock()
    progress = Progress("cam1_mp4", 10, enabled=False, stream=log, clock=clock)
    clock.now = 100
    progress.update(5)
    assert log.getvalue() == ""
